//go:build cgo && linux

package pager

// The isolated engine: Serve with Config.Isolated runs the whole serving
// loop inside one cgo call. A goroutine in a cgo call is, for the Go
// scheduler, in a system call: a stop-the-world does not wait for it, and
// its thread keeps running while the world is stopped. The C loop below
// never calls back into Go, so it goes on serving the faults of goroutines
// stopped inside runtime assembly (memmove behind copy, memequal behind
// bytes.Equal) until they reach a safe point, and the garbage collection
// that stopped the world completes.
//
// What the C loop shares with Go, all of it pinned (runtime.Pinner) for the
// duration of the call: the claimed/done/zero bitmaps of every region
// (updated with the same atomic operations as bitmap.go), the Mapped
// sources' bytes (copied from by UFFDIO_COPY), and the counters of p.stats,
// passed one address each (atomic.Uint64 is one 8-byte word: asserted at
// compile time below), so that no C struct mirrors the Go layout.
//
// What it keeps to itself, in C memory: the layout of the regions, which it
// changes on UNMAP and REMAP events. A watcher goroutine copies it back into
// p.layout (every 50 ms when it changed, and when Serve returns), pushes
// regions added during Serve, reports the loop's errors to Config.OnError,
// and stops the loop when ctx ends or the userfaultfd is closed. The watcher
// is an ordinary goroutine: it runs only when the world does, and the loop
// never waits for it.

/*
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>
#include <linux/userfaultfd.h>

// Outcomes of an install, as in resolve.go.
enum { ISO_INSTALLED, ISO_RETRY, ISO_GONE, ISO_NOMAPPING, ISO_FAILED, ISO_OUTSIDE };
// Kinds of recorded errors.
enum { ISO_ERR_OUTSIDE = 1, ISO_ERR_COPY, ISO_ERR_ZEROPAGE };
// What made the loop fail.
enum { ISO_OP_READ = 1, ISO_OP_POLL, ISO_OP_ALLOC };

#define ISO_BATCH 64
#define ISO_STREAMS 4
#define ISO_BUCKETS 40
#define ISO_ERRS 64
#define ISO_STRAYS 1024

// A region as served (region in pager.go).
typedef struct {
	uint64_t start, len, psize;
	int64_t pages, base;   // base: index of start's page in the bitmaps
	uint32_t shift;
	int32_t orig;          // the Go region it derives from
	int32_t huge, zero_src;
	const char *src;       // contents of page 0, or NULL for zeroes
	uint64_t *claimed, *done, *zero;
} iso_region;

// What the Go side reads back of a region: no pointers.
typedef struct {
	uint64_t start, len;
	int64_t base, pages, orig;
} iso_snap;

// The addresses of the Go counters (counters in stats.go).
typedef struct {
	uint64_t *faults, *pages, *bytes, *prefetched, *zeroed, *exists, *outside;
	uint64_t *removes, *unmaps, *remaps, *forks;
	uint64_t *latency; // ISO_BUCKETS words
} iso_counters;

typedef struct {
	int32_t kind, err;
	uint64_t addr, len;
} iso_err;

typedef struct {
	uint64_t addr, t0;
} iso_pending;

typedef struct {
	uint64_t next, used;
	int64_t window;
} iso_stream;

typedef struct {
	int fd, efd;            // a duplicate of the userfaultfd; the stop eventfd
	int stop;               // set by iso_stop
	int failop;
	pthread_mutex_t mu;     // regs, errs: against the Go side's calls
	iso_region *regs;
	int nregs;
	uint64_t gen;           // bumped when events change regs
	int64_t pf_min, pf_max;
	int adaptive;
	iso_counters c;
	char *zhuge;            // a huge page of zeroes, for hugetlbfs
	uint64_t zhuge_len;
	iso_stream st[ISO_STREAMS];
	uint64_t tick;
	int exist;              // the last install met an existing page
	iso_err errs[ISO_ERRS];
	int nerrs;
	uint64_t dropped;
	iso_pending *def;       // EAGAIN: retried after reading events
	int ndef, capdef;
	iso_pending stray[ISO_STRAYS]; // faults in no region: retried when regions are added
	int nstray;
	int pushed;             // regions were added: retry the strays
} iso_sess;

static inline uint64_t iso_now(void) {
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

static inline void iso_add(uint64_t *c, uint64_t n) {
	if (n) __atomic_fetch_add(c, n, __ATOMIC_RELAXED);
}

static inline void iso_observe(iso_sess *s, uint64_t t0) {
	uint64_t d = iso_now() - t0;
	int i = d ? 63 - __builtin_clzll(d) : 0;
	if (i >= ISO_BUCKETS) i = ISO_BUCKETS - 1;
	iso_add(&s->c.latency[i], 1);
}

// Bitmaps, as bitmap.go.

static inline uint64_t iso_mask(int bit, int64_t n) {
	return n >= 64 ? ~0ull : ((1ull << n) - 1) << bit;
}

static inline int iso_tz(uint64_t w) { return w ? __builtin_ctzll(w) : 64; }

static inline int iso_get(uint64_t *b, int64_t i) {
	return (__atomic_load_n(&b[i >> 6], __ATOMIC_SEQ_CST) >> (i & 63)) & 1;
}

static void iso_set_range(uint64_t *b, int64_t i, int64_t n) {
	while (n > 0) {
		int bit = i & 63;
		int64_t k = 64 - bit < n ? 64 - bit : n;
		__atomic_fetch_or(&b[i >> 6], iso_mask(bit, k), __ATOMIC_SEQ_CST);
		i += k, n -= k;
	}
}

static void iso_clear_range(uint64_t *b, int64_t i, int64_t n) {
	while (n > 0) {
		int bit = i & 63;
		int64_t k = 64 - bit < n ? 64 - bit : n;
		__atomic_fetch_and(&b[i >> 6], ~iso_mask(bit, k), __ATOMIC_SEQ_CST);
		i += k, n -= k;
	}
}

// iso_claim sets the clear bits [i, i+k) for the largest k <= max such that
// all were clear, and returns k.
static int64_t iso_claim(uint64_t *b, int64_t i, int64_t max) {
	int64_t n = 0;
	while (n < max) {
		int64_t j = i + n;
		int bit = j & 63;
		uint64_t *w = &b[j >> 6];
		int64_t span = 64 - bit < max - n ? 64 - bit : max - n;
		for (;;) {
			uint64_t old = __atomic_load_n(w, __ATOMIC_SEQ_CST);
			int64_t run = iso_tz(old >> bit);
			if (bit + run > 64) run = 64 - bit;
			if (run > span) run = span;
			if (run == 0) return n;
			if (__atomic_compare_exchange_n(w, &old, old | iso_mask(bit, run), 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
				n += run;
				if (run < span) return n;
				break;
			}
		}
	}
	return n;
}

// iso_claim_back claims clear bits down from i-1 to lo, stopping at the
// first set bit, and returns how many it claimed.
static int64_t iso_claim_back(uint64_t *b, int64_t i, int64_t lo) {
	int64_t n = 0;
	for (int64_t j = i - 1; j >= lo; j--) {
		uint64_t *w = &b[j >> 6], m = 1ull << (j & 63);
		for (;;) {
			uint64_t old = __atomic_load_n(w, __ATOMIC_SEQ_CST);
			if (old & m) return n;
			if (__atomic_compare_exchange_n(w, &old, old | m, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) break;
		}
		n++;
	}
	return n;
}

// iso_bm_run returns the length of the run of bits equal to v from i, at
// most n.
static int64_t iso_bm_run(uint64_t *b, int64_t i, int64_t n, int v) {
	int64_t k = 0;
	while (k < n) {
		int64_t j = i + k;
		uint64_t w = __atomic_load_n(&b[j >> 6], __ATOMIC_SEQ_CST);
		if (v) w = ~w;
		int bit = j & 63;
		int64_t r = iso_tz(w >> bit);
		if (bit + r > 64) r = 64 - bit;
		if (r == 0) return k;
		k += r;
		if (bit + r < 64) break;
	}
	return k < n ? k : n;
}

static void iso_record(iso_sess *s, int kind, int err, uint64_t addr, uint64_t len) {
	if (s->nerrs < ISO_ERRS) {
		iso_err *e = &s->errs[s->nerrs++];
		e->kind = kind, e->err = err, e->addr = addr, e->len = len;
	} else {
		s->dropped++;
	}
}

// The layout.

static iso_region *iso_lookup(iso_sess *s, uint64_t addr) {
	int lo = 0, hi = s->nregs;
	while (lo < hi) {
		int m = (int)(((unsigned)lo + (unsigned)hi) >> 1);
		if (s->regs[m].start + s->regs[m].len <= addr) lo = m + 1;
		else hi = m;
	}
	if (lo < s->nregs && s->regs[lo].start <= addr) return &s->regs[lo];
	return NULL;
}

static int iso_cmp(const void *a, const void *b) {
	uint64_t x = ((const iso_region *)a)->start, y = ((const iso_region *)b)->start;
	return x < y ? -1 : x > y;
}

// iso_sub returns the part [a, b) of r, sharing its bitmaps.
static iso_region iso_sub(const iso_region *r, uint64_t a, uint64_t b) {
	iso_region n = *r;
	int64_t k = (int64_t)((a - r->start) >> r->shift);
	n.start = a, n.len = b - a;
	n.base = r->base + k;
	n.pages = (int64_t)((b - a) >> r->shift);
	if (r->src) n.src = r->src + ((uint64_t)k << r->shift);
	return n;
}

typedef struct {
	iso_region *v;
	int n, cap;
} iso_vec;

static int iso_vec_add(iso_vec *v, iso_region r) {
	if (v->n == v->cap) {
		int cap = v->cap ? 2 * v->cap : 8;
		iso_region *nv = realloc(v->v, (size_t)cap * sizeof *nv);
		if (!nv) return -1;
		v->v = nv, v->cap = cap;
	}
	v->v[v->n++] = r;
	return 0;
}

// iso_cut adds the regions of in[:n] to out, less [start, end), splitting
// those that straddle it (cutOut in events.go).
static int iso_cut(iso_vec *out, const iso_region *in, int n, uint64_t start, uint64_t end) {
	for (int i = 0; i < n; i++) {
		const iso_region *r = &in[i];
		uint64_t rend = r->start + r->len;
		if (end <= r->start || rend <= start) {
			if (iso_vec_add(out, *r)) return -1;
			continue;
		}
		uint64_t a = start & ~(r->psize - 1);
		if (r->start < a && iso_vec_add(out, iso_sub(r, r->start, a))) return -1;
		uint64_t e = (end + r->psize - 1) & ~(r->psize - 1);
		if (e < rend && iso_vec_add(out, iso_sub(r, e, rend))) return -1;
	}
	return 0;
}

static void iso_replace(iso_sess *s, iso_vec *v) {
	qsort(v->v, (size_t)v->n, sizeof *v->v, iso_cmp);
	free(s->regs);
	s->regs = v->v, s->nregs = v->n;
	__atomic_fetch_add(&s->gen, 1, __ATOMIC_SEQ_CST);
}

static int iso_unmap(iso_sess *s, uint64_t start, uint64_t end) {
	iso_vec v = {0};
	if (iso_cut(&v, s->regs, s->nregs, start, end)) {
		free(v.v);
		return -1;
	}
	iso_replace(s, &v);
	return 0;
}

// iso_remap moves the regions of [from, from+len) to `to`.
static int iso_remap(iso_sess *s, uint64_t from, uint64_t to, uint64_t len) {
	iso_vec moved = {0}, a = {0}, b = {0};
	int err = 0;
	for (int i = 0; i < s->nregs && !err; i++) {
		iso_region *r = &s->regs[i];
		uint64_t x = from > r->start ? from : r->start;
		uint64_t y = from + len < r->start + r->len ? from + len : r->start + r->len;
		if (x < y) {
			iso_region n = iso_sub(r, x, y);
			n.start = to + (x - from);
			err = iso_vec_add(&moved, n);
		}
	}
	if (!err) err = iso_cut(&a, s->regs, s->nregs, from, from + len);
	if (!err) err = iso_cut(&b, a.v, a.n, to, to + len); // whatever was there is gone
	for (int i = 0; i < moved.n && !err; i++) err = iso_vec_add(&b, moved.v[i]);
	free(moved.v);
	free(a.v);
	if (err) {
		free(b.v);
		return -1;
	}
	iso_replace(s, &b);
	return 0;
}

// iso_remove marks the whole pages of [start, end) to be zero-filled on
// their next fault.
static void iso_remove(iso_sess *s, uint64_t start, uint64_t end) {
	for (int k = 0; k < s->nregs; k++) {
		iso_region *r = &s->regs[k];
		uint64_t a = start > r->start ? start : r->start;
		uint64_t b = end < r->start + r->len ? end : r->start + r->len;
		if (a >= b) continue;
		int64_t i = (int64_t)((a - r->start + r->psize - 1) >> r->shift);
		int64_t j = (int64_t)((b - r->start) >> r->shift);
		if (i >= j) continue;
		iso_set_range(r->zero, r->base + i, j - i);
		iso_clear_range(r->done, r->base + i, j - i);
		iso_clear_range(r->claimed, r->base + i, j - i);
	}
}

// iso_event applies a non-fault event. The caller holds mu.
static int iso_event(iso_sess *s, struct uffd_msg *m) {
	switch (m->event) {
	case UFFD_EVENT_REMOVE:
		iso_add(s->c.removes, 1);
		iso_remove(s, m->arg.remove.start, m->arg.remove.end);
		return 0;
	case UFFD_EVENT_UNMAP:
		iso_add(s->c.unmaps, 1);
		return iso_unmap(s, m->arg.remove.start, m->arg.remove.end);
	case UFFD_EVENT_REMAP:
		iso_add(s->c.remaps, 1);
		return iso_remap(s, m->arg.remap.from, m->arg.remap.to, m->arg.remap.len);
	case UFFD_EVENT_FORK:
		// The child's userfaultfd: an isolated pager serves its own
		// process only. Closing it leaves the child's registered ranges
		// to fault as if never registered.
		iso_add(s->c.forks, 1);
		close((int)m->arg.fork.ufd);
		return 0;
	}
	return 0;
}

// Resolving, as resolve.go.

static void iso_wake(iso_sess *s, uint64_t start, uint64_t len) {
	struct uffdio_range rg = {.start = start, .len = len};
	ioctl(s->fd, UFFDIO_WAKE, &rg);
}

// iso_install_run resolves [lo, hi) of r with one kind of contents,
// continuing after partial progress and skipping pages that exist.
static int iso_install_run(iso_sess *s, iso_region *r, int64_t lo, int64_t hi, int zero) {
	uint64_t dst = r->start + ((uint64_t)lo << r->shift);
	uint64_t end = r->start + ((uint64_t)hi << r->shift);
	const char *src = NULL;
	if (zero && r->huge) src = s->zhuge;
	else if (!zero) src = r->src + ((uint64_t)lo << r->shift);
	uint64_t off = 0; // into src
	uint64_t skipped = 0; // pages that existed
	while (dst < end) {
		uint64_t length = end - dst;
		int64_t done;
		int err = 0;
		int kind = ISO_ERR_COPY;
		if (zero && !r->huge) {
			struct uffdio_zeropage z = {.range = {.start = dst, .len = length}};
			if (ioctl(s->fd, UFFDIO_ZEROPAGE, &z)) err = errno;
			done = z.zeropage;
			kind = ISO_ERR_ZEROPAGE;
		} else {
			// hugetlbfs zeroes: one zero huge page at a time.
			if (zero) length = r->psize;
			struct uffdio_copy c = {.dst = dst, .src = (uint64_t)(uintptr_t)(zero ? src : src + off), .len = length};
			if (ioctl(s->fd, UFFDIO_COPY, &c)) err = errno;
			done = c.copy;
		}
		if (!err) {
			dst += length, off += length;
			continue;
		}
		if (done < 0) done = 0;
		switch (err) {
		case EINTR:
			break;
		case EAGAIN:
			if (done == 0) return ISO_RETRY; // an event is pending
			break;
		case EEXIST:
			iso_add(s->c.exists, 1);
			s->exist = 1;
			done += (int64_t)r->psize; // skip the existing page
			skipped++;
			break;
		case ESRCH:
			return ISO_GONE;
		case ENOENT:
		case EINVAL:
		case EFAULT:
			// No longer mapped (or registered) as it was: an UNMAP or
			// REMAP event is on its way.
			iso_wake(s, dst, end - dst);
			return ISO_NOMAPPING;
		default:
			iso_record(s, kind, err, dst, end - dst);
			return ISO_FAILED;
		}
		dst += (uint64_t)done, off += (uint64_t)done;
	}
	// Count only what this install put there.
	uint64_t pages = (uint64_t)(hi - lo) - skipped;
	iso_add(s->c.pages, pages);
	iso_add(s->c.bytes, pages << r->shift);
	if (zero) iso_add(s->c.zeroed, pages);
	return ISO_INSTALLED;
}

// iso_install resolves the claimed pages [lo, hi) of r and marks them done;
// f is the faulting page (woken if it existed), or -1. On failure the
// pages are released.
static int iso_install(iso_sess *s, iso_region *r, int64_t lo, int64_t hi, int64_t f) {
	int out = ISO_INSTALLED;
	while (lo < hi && out == ISO_INSTALLED) {
		// Split the run where the zero-fill marks change.
		int zero = iso_get(r->zero, r->base + lo);
		int64_t k = iso_bm_run(r->zero, r->base + lo, hi - lo, zero);
		out = iso_install_run(s, r, lo, lo + k, zero || r->zero_src);
		if (out == ISO_INSTALLED) {
			if (zero) iso_clear_range(r->zero, r->base + lo, k);
			iso_set_range(r->done, r->base + lo, k);
			lo += k;
		}
	}
	if (out != ISO_INSTALLED) iso_clear_range(r->claimed, r->base + lo, hi - lo);
	if (s->exist && f >= 0) iso_wake(s, r->start + ((uint64_t)f << r->shift), r->psize);
	s->exist = 0;
	return out;
}

static inline int64_t iso_pages_of(iso_region *r, int64_t b) {
	int64_t n = (b + (int64_t)r->psize - 1) >> r->shift;
	return n > 1 ? n : 1;
}

// iso_window returns the pages to resolve for a fault at page i of r, as
// [lo, hi), and how many to read ahead (resolver.window).
static void iso_window(iso_sess *s, iso_region *r, int64_t i, uint64_t addr, int64_t *lo, int64_t *hi, int64_t *ahead) {
	*ahead = 0;
	if (!s->adaptive) {
		if (s->pf_min <= (int64_t)r->psize) {
			*lo = i, *hi = i + 1;
			return;
		}
		int64_t n = iso_pages_of(r, s->pf_min);
		*lo = i - i % n;
		*hi = *lo + n < r->pages ? *lo + n : r->pages;
		return;
	}
	s->tick++;
	int64_t minw = iso_pages_of(r, s->pf_min), maxw = iso_pages_of(r, s->pf_max);
	uint64_t page = addr & ~(r->psize - 1);
	iso_stream *st = NULL;
	for (int k = 0; k < ISO_STREAMS; k++) {
		if (s->st[k].next == page && s->st[k].window > 0) {
			st = &s->st[k];
			break;
		}
	}
	int64_t a = 0;
	if (st) {
		// Sequential: grow, and read one window ahead.
		st->window = st->window * 2 < maxw ? st->window * 2 : maxw;
		a = st->window;
	} else {
		// A new or random access: replace the least recently used stream.
		st = &s->st[0];
		for (int k = 0; k < ISO_STREAMS; k++)
			if (s->st[k].used < st->used) st = &s->st[k];
		st->window = minw;
	}
	st->used = s->tick;
	int64_t h = i + st->window < r->pages ? i + st->window : r->pages;
	if (a > r->pages - h) a = r->pages - h;
	st->next = r->start + ((uint64_t)(h + a) << r->shift);
	*lo = i, *hi = h, *ahead = a;
}

// iso_finish installs [lo, hi), claimed, for the fault at page f.
static int iso_finish(iso_sess *s, iso_region *r, int64_t lo, int64_t hi, int64_t f, uint64_t t0, int again) {
	int out = iso_install(s, r, lo, hi, f);
	if (out == ISO_INSTALLED) {
		iso_observe(s, t0);
		if (!again) iso_add(s->c.prefetched, (uint64_t)(hi - lo - 1));
	}
	return out;
}

// iso_fault resolves one page fault (resolver.fault). The caller holds mu.
static int iso_fault(iso_sess *s, uint64_t addr, uint64_t t0) {
	iso_region *r = iso_lookup(s, addr);
	if (!r) return ISO_OUTSIDE;
	int64_t i = (int64_t)((addr - r->start) >> r->shift), idx = r->base + i;
	int64_t lo, hi, ahead;
	iso_window(s, r, i, addr, &lo, &hi, &ahead);
	int64_t n = iso_claim(r->claimed, idx, hi - i);
	if (n == 0) {
		if (!iso_get(r->done, idx)) return ISO_INSTALLED; // another resolver (Resolve) has it
		// Resolved already: a repeated message, or the page went away
		// without an event. Resolve it again; an existing page is woken.
		return iso_finish(s, r, i, i + 1, i, t0, 1);
	}
	int64_t back = 0;
	if (lo < i) back = iso_claim_back(r->claimed, idx, r->base + lo);
	int out = iso_finish(s, r, i - back, i + n, i, t0, 0);
	if (out == ISO_INSTALLED && ahead > 0 && n == hi - i) {
		int64_t k = iso_claim(r->claimed, r->base + i + n, ahead);
		if (k > 0 && iso_install(s, r, i + n, i + n + k, -1) == ISO_INSTALLED) iso_add(s->c.prefetched, (uint64_t)k);
	}
	return out;
}

static int iso_defer(iso_sess *s, uint64_t addr, uint64_t t0) {
	if (s->ndef == s->capdef) {
		int cap = s->capdef ? 2 * s->capdef : ISO_BATCH;
		iso_pending *d = realloc(s->def, (size_t)cap * sizeof *d);
		if (!d) return -1;
		s->def = d, s->capdef = cap;
	}
	s->def[s->ndef].addr = addr, s->def[s->ndef].t0 = t0;
	s->ndef++;
	return 0;
}

// iso_outside keeps a fault in no region, to retry it when regions are
// added (the thread waits meanwhile, as with the Go engine), and records it.
static void iso_outside(iso_sess *s, uint64_t addr, uint64_t t0) {
	iso_add(s->c.outside, 1);
	// A thread woken by a signal faults again: keep and report each
	// address once.
	for (int i = 0; i < s->nstray; i++)
		if (s->stray[i].addr == addr) return;
	iso_record(s, ISO_ERR_OUTSIDE, 0, addr, 0);
	if (s->nstray < ISO_STRAYS) {
		s->stray[s->nstray].addr = addr, s->stray[s->nstray].t0 = t0;
		s->nstray++;
	}
}

// iso_retry_strays resolves the faults kept by iso_outside again, after
// regions were added. The caller holds mu.
static int iso_retry_strays(iso_sess *s) {
	int w = 0, gone = 0;
	for (int i = 0; i < s->nstray; i++) {
		int out = gone ? ISO_OUTSIDE : iso_fault(s, s->stray[i].addr, s->stray[i].t0);
		if (out == ISO_GONE) gone = 1;
		// Failing with EAGAIN, it is deferred; with no memory to defer
		// it, it stays here.
		if (out == ISO_OUTSIDE || (out == ISO_RETRY && iso_defer(s, s->stray[i].addr, s->stray[i].t0)))
			s->stray[w++] = s->stray[i];
	}
	s->nstray = w;
	return gone ? ISO_GONE : ISO_INSTALLED;
}

// iso_retry_deferred resolves the faults deferred by EAGAIN again, keeping
// those that meet it again.
static int iso_retry_deferred(iso_sess *s) {
	int w = 0;
	for (int i = 0; i < s->ndef; i++) {
		pthread_mutex_lock(&s->mu);
		int out = iso_fault(s, s->def[i].addr, s->def[i].t0);
		if (out == ISO_OUTSIDE) iso_outside(s, s->def[i].addr, s->def[i].t0);
		pthread_mutex_unlock(&s->mu);
		if (out == ISO_GONE) return ISO_GONE;
		if (out == ISO_RETRY) s->def[w++] = s->def[i];
	}
	s->ndef = w;
	return ISO_INSTALLED;
}

// iso_serve is the loop: it returns 0 when stopped (iso_stop) or when the
// process is gone, and an errno (what failed in failop) otherwise.
static int iso_serve(iso_sess *s) {
	struct uffd_msg msgs[ISO_BATCH];
	for (;;) {
		if (__atomic_load_n(&s->stop, __ATOMIC_SEQ_CST)) return 0;
		if (__atomic_load_n(&s->pushed, __ATOMIC_SEQ_CST)) {
			__atomic_store_n(&s->pushed, 0, __ATOMIC_SEQ_CST);
			pthread_mutex_lock(&s->mu);
			int out = iso_retry_strays(s);
			pthread_mutex_unlock(&s->mu);
			if (out == ISO_GONE) return 0;
		}
		ssize_t n = read(s->fd, msgs, sizeof msgs);
		if (n < 0) {
			int e = errno;
			if (e == EINTR) continue;
			if (e != EAGAIN) {
				s->failop = ISO_OP_READ;
				return e;
			}
			if (s->ndef > 0) {
				// The event that made a resolve fail with EAGAIN is
				// being queued.
				struct timespec ts = {0, 50000};
				nanosleep(&ts, NULL);
				if (iso_retry_deferred(s) == ISO_GONE) return 0;
				continue;
			}
			struct pollfd fds[2] = {{.fd = s->fd, .events = POLLIN}, {.fd = s->efd, .events = POLLIN}};
			if (poll(fds, 2, 100) < 0 && errno != EINTR) {
				s->failop = ISO_OP_POLL;
				return errno;
			}
			if (fds[1].revents) {
				// A stop, or regions were added.
				uint64_t v;
				ssize_t r = read(s->efd, &v, sizeof v);
				(void)r;
			}
			continue;
		}
		if (n == 0) return 0;
		uint64_t t0 = iso_now();
		int k = (int)(n / (ssize_t)sizeof msgs[0]), faults = 0;
		// Apply the batch's events first: the batch's faults are then
		// resolved against the new layout.
		pthread_mutex_lock(&s->mu);
		for (int i = 0; i < k; i++) {
			if (msgs[i].event == UFFD_EVENT_PAGEFAULT) {
				faults++;
			} else if (iso_event(s, &msgs[i])) {
				pthread_mutex_unlock(&s->mu);
				s->failop = ISO_OP_ALLOC;
				return ENOMEM;
			}
		}
		pthread_mutex_unlock(&s->mu);
		iso_add(s->c.faults, (uint64_t)faults);
		if (iso_retry_deferred(s) == ISO_GONE) return 0;
		for (int i = 0; i < k; i++) {
			if (msgs[i].event != UFFD_EVENT_PAGEFAULT) continue;
			uint64_t addr = msgs[i].arg.pagefault.address;
			pthread_mutex_lock(&s->mu);
			int out = iso_fault(s, addr, t0);
			if (out == ISO_OUTSIDE) iso_outside(s, addr, t0);
			pthread_mutex_unlock(&s->mu);
			if (out == ISO_GONE) return 0;
			if (out == ISO_RETRY && iso_defer(s, addr, t0)) {
				s->failop = ISO_OP_ALLOC;
				return ENOMEM;
			}
		}
	}
}

// The Go side's calls.

static iso_sess *iso_new(int fd, int efd, int64_t pf_min, int64_t pf_max, int adaptive) {
	iso_sess *s = calloc(1, sizeof *s);
	if (!s) return NULL;
	s->fd = fd, s->efd = efd;
	s->pf_min = pf_min, s->pf_max = pf_max, s->adaptive = adaptive;
	pthread_mutex_init(&s->mu, NULL);
	return s;
}

static void iso_free(iso_sess *s) {
	pthread_mutex_destroy(&s->mu);
	free(s->regs);
	free(s->zhuge);
	free(s->def);
	free(s);
}

static iso_region *iso_descs(int n) { return calloc((size_t)(n ? n : 1), sizeof(iso_region)); }

// iso_push adds regions to the layout.
static int iso_push(iso_sess *s, iso_region *rs, int n) {
	int err = 0;
	pthread_mutex_lock(&s->mu);
	for (int i = 0; i < n && !err; i++) {
		if (rs[i].huge && rs[i].psize > s->zhuge_len) {
			char *z = calloc(1, rs[i].psize);
			if (!z) {
				err = ENOMEM;
				break;
			}
			free(s->zhuge);
			s->zhuge = z, s->zhuge_len = rs[i].psize;
		}
	}
	if (!err) {
		iso_vec v = {0};
		for (int i = 0; i < s->nregs && !err; i++) err = iso_vec_add(&v, s->regs[i]) ? ENOMEM : 0;
		for (int i = 0; i < n && !err; i++) err = iso_vec_add(&v, rs[i]) ? ENOMEM : 0;
		if (err) {
			free(v.v);
		} else {
			qsort(v.v, (size_t)v.n, sizeof *v.v, iso_cmp);
			free(s->regs);
			s->regs = v.v, s->nregs = v.n;
		}
	}
	pthread_mutex_unlock(&s->mu);
	if (!err && n > 0) {
		// Wake the loop to retry the faults that were in no region.
		__atomic_store_n(&s->pushed, 1, __ATOMIC_SEQ_CST);
		uint64_t one = 1;
		ssize_t r = write(s->efd, &one, sizeof one);
		(void)r;
	}
	return err;
}

static uint64_t iso_gen(iso_sess *s) { return __atomic_load_n(&s->gen, __ATOMIC_SEQ_CST); }

// iso_snapshot copies the layout into out[:cap] and returns the number of
// regions (more than cap: nothing was copied) and the generation.
static int iso_snapshot(iso_sess *s, iso_snap *out, int cap, uint64_t *gen) {
	pthread_mutex_lock(&s->mu);
	int n = s->nregs;
	*gen = __atomic_load_n(&s->gen, __ATOMIC_SEQ_CST);
	if (n <= cap) {
		for (int i = 0; i < n; i++) {
			iso_region *r = &s->regs[i];
			out[i].start = r->start, out[i].len = r->len;
			out[i].base = r->base, out[i].pages = r->pages, out[i].orig = r->orig;
		}
	}
	pthread_mutex_unlock(&s->mu);
	return n;
}

// iso_drain moves the recorded errors to out (ISO_ERRS of them) and returns
// how many, and how many were dropped since the last call.
static int iso_drain(iso_sess *s, iso_err *out, uint64_t *dropped) {
	pthread_mutex_lock(&s->mu);
	int n = s->nerrs;
	memcpy(out, s->errs, (size_t)n * sizeof *out);
	s->nerrs = 0;
	*dropped = s->dropped;
	s->dropped = 0;
	pthread_mutex_unlock(&s->mu);
	return n;
}

static void iso_stop(iso_sess *s) {
	__atomic_store_n(&s->stop, 1, __ATOMIC_SEQ_CST);
	uint64_t one = 1;
	ssize_t r = write(s->efd, &one, sizeof one);
	(void)r;
}
*/
import "C"

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/gouffd/uffd"
	"github.com/gouffd/uffd/internal/raw"
)

// The C loop updates the counters as plain 8-byte words.
var (
	_ [unsafe.Sizeof(atomic.Uint64{}) - 8]byte
	_ [8 - unsafe.Sizeof(atomic.Uint64{})]byte
)

// watchEvery is how often the watcher looks for a Close of the userfaultfd,
// layout changes and errors.
const watchEvery = 50 * time.Millisecond

// Errors of Serve for options an isolated pager cannot honour: each needs
// Go code on the fault path.
var (
	errIsolatedFill    = errors.New("pager: Config.Fill is not supported with Config.Isolated")
	errIsolatedOnFault = errors.New("pager: Config.OnFault is not supported with Config.Isolated")
	errIsolatedOnFork  = errors.New("pager: Config.OnFork is not supported with Config.Isolated (an isolated pager closes a fork child's userfaultfd)")
)

func init() {
	serveIsolated = serveIsolatedC
	isolatedAdd = func(p *Pager, r *region) error {
		if v, ok := isoSessions.Load(p); ok {
			ss := v.(*isoSession)
			ss.hooked = append(ss.hooked, r)
			return ss.push([]*region{r})
		}
		return nil
	}
}

// isoSessions maps a *Pager to its running *isoSession.
var isoSessions sync.Map

// isoSession is one isolated Serve.
type isoSession struct {
	p *Pager
	s *C.iso_sess

	mu      sync.Mutex // pin, origins, closed
	pin     runtime.Pinner
	origins []*region // the Go regions the C regions derive from (their orig)
	closed  bool

	// Guarded by p.layoutMu.
	stored *[]*region // the layout last stored, or read at the start
	hooked []*region  // regions Add pushed since
	gen    uint64     // the C layout's generation stored
}

func serveIsolatedC(ctx context.Context, p *Pager) error {
	switch {
	case p.cfg.Fill:
		return errIsolatedFill
	case p.cfg.OnFault != nil:
		return errIsolatedOnFault
	case p.cfg.OnFork != nil:
		return errIsolatedOnFork
	}
	if raw.Closed(p.u) {
		return nil
	}
	// A duplicate of the descriptor that the loop owns: a Close of the
	// userfaultfd cannot close it under the loop (the watcher notices the
	// Close instead).
	rc, err := raw.File(p.u).SyscallConn()
	if err != nil {
		return nil // closed meanwhile
	}
	fd := -1
	var dupErr error
	if err := rc.Control(func(x uintptr) { fd, dupErr = unix.FcntlInt(x, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return nil
	}
	if dupErr != nil {
		return &uffd.OpError{Op: "dup", Err: dupErr}
	}
	defer unix.Close(fd)
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return &uffd.OpError{Op: "eventfd", Err: err}
	}
	defer unix.Close(efd)

	pf := p.cfg.Prefetch
	adaptive := C.int(0)
	if pf.Adaptive {
		adaptive = 1
	}
	s := C.iso_new(C.int(fd), C.int(efd), C.int64_t(pf.Min), C.int64_t(pf.Max), adaptive)
	if s == nil {
		return &uffd.OpError{Op: "serve", Err: syscall.ENOMEM}
	}
	ss := &isoSession{p: p, s: s}
	defer ss.pin.Unpin()
	defer C.iso_free(s)

	st := &p.stats
	ss.pin.Pin(st)
	word := func(c *atomic.Uint64) *C.uint64_t { return (*C.uint64_t)(unsafe.Pointer(c)) }
	s.c = C.iso_counters{
		faults: word(&st.faults), pages: word(&st.pages), bytes: word(&st.bytes),
		prefetched: word(&st.prefetched), zeroed: word(&st.zeroed), exists: word(&st.exists),
		outside: word(&st.outside), removes: word(&st.removes), unmaps: word(&st.unmaps),
		remaps: word(&st.remaps), forks: word(&st.forks), latency: word(&st.latency[0]),
	}

	p.layoutMu.Lock()
	ss.stored = p.layout.Load()
	err = ss.push(*ss.stored)
	if err == nil {
		isoSessions.Store(p, ss)
	}
	p.layoutMu.Unlock()
	if err != nil {
		return err
	}

	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		ss.watch(ctx, done)
	}()

	rcode := C.iso_serve(s)

	close(done)
	wg.Wait()
	p.layoutMu.Lock()
	isoSessions.Delete(p)
	perr := ss.refresh()
	ss.mu.Lock()
	ss.closed = true
	ss.mu.Unlock()
	p.layoutMu.Unlock()
	if perr != nil {
		p.report(perr)
	}
	ss.reportErrors()

	if rcode != 0 {
		op := "read"
		switch s.failop {
		case C.ISO_OP_POLL:
			op = "poll"
		case C.ISO_OP_ALLOC:
			op = "serve"
		}
		return &uffd.OpError{Op: op, Err: syscall.Errno(rcode)}
	}
	return nil
}

// watch stops the loop when ctx ends or the userfaultfd is closed, and
// keeps the Go side up to date meanwhile, until done is closed.
func (ss *isoSession) watch(ctx context.Context, done <-chan struct{}) {
	t := time.NewTicker(watchEvery)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-ctx.Done():
			C.iso_stop(ss.s)
			return
		case <-t.C:
		}
		if raw.Closed(ss.p.u) {
			C.iso_stop(ss.s)
			return
		}
		ss.p.layoutMu.Lock()
		err := ss.refresh()
		ss.p.layoutMu.Unlock()
		if err != nil {
			ss.p.report(err)
		}
		ss.reportErrors()
	}
}

// refresh gives the loop the regions Add added without the hook, and
// stores the loop's layout in p.layout when events changed it. The caller
// holds p.layoutMu, and reports the error (a region the loop could not
// take) after releasing it.
func (ss *isoSession) refresh() (err error) {
	p := ss.p
	if cur := p.layout.Load(); cur != ss.stored {
		known := make(map[*region]bool, len(*ss.stored)+len(ss.hooked))
		for _, r := range *ss.stored {
			known[r] = true
		}
		for _, r := range ss.hooked {
			known[r] = true
		}
		var added []*region
		for _, r := range *cur {
			if !known[r] {
				added = append(added, r)
			}
		}
		err = ss.push(added)
		ss.stored, ss.hooked = cur, nil
	}
	if uint64(C.iso_gen(ss.s)) == ss.gen {
		return err
	}
	snaps := make([]C.iso_snap, len(*ss.stored)+8)
	var gen C.uint64_t
	for {
		n := int(C.iso_snapshot(ss.s, &snaps[0], C.int(len(snaps)), &gen))
		if n <= len(snaps) {
			snaps = snaps[:n]
			break
		}
		snaps = make([]C.iso_snap, n)
	}
	ss.mu.Lock()
	l := make([]*region, 0, len(snaps))
	for _, c := range snaps {
		o := ss.origins[c.orig]
		k := uintptr(c.base) - uintptr(o.base)
		n := o.sub(o.Start+k<<o.shift, o.Start+(k+uintptr(c.pages))<<o.shift)
		n.Start = uintptr(c.start)
		l = append(l, n)
	}
	ss.mu.Unlock()
	p.layout.Store(&l)
	ss.stored, ss.gen = &l, uint64(gen)
	return err
}

// push hands regions to the loop, pinning their bitmaps and contents.
func (ss *isoSession) push(rs []*region) error {
	if len(rs) == 0 {
		return nil
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.closed {
		return nil
	}
	descs := C.iso_descs(C.int(len(rs)))
	if descs == nil {
		return &uffd.OpError{Op: "serve", Err: syscall.ENOMEM}
	}
	defer C.free(unsafe.Pointer(descs))
	ds := unsafe.Slice(descs, len(rs))
	words := func(b bitmap) *C.uint64_t {
		ss.pin.Pin(&b[0])
		return (*C.uint64_t)(unsafe.Pointer(&b[0]))
	}
	for i, r := range rs {
		d := &ds[i]
		d.start, d.len, d.psize = C.uint64_t(r.Start), C.uint64_t(r.Len), C.uint64_t(r.psize)
		d.pages, d.base = C.int64_t(r.pages), C.int64_t(r.base)
		d.shift = C.uint32_t(r.shift)
		d.orig = C.int32_t(len(ss.origins))
		if r.huge {
			d.huge = 1
		}
		if r.zeroSrc {
			d.zero_src = 1
		}
		if r.src != nil {
			ss.pin.Pin(&r.src[0]) // a no-op for mapped files
			d.src = (*C.char)(unsafe.Pointer(&r.src[0]))
		}
		d.claimed, d.done, d.zero = words(r.st.claimed), words(r.st.done), words(r.st.zero)
		ss.origins = append(ss.origins, r)
	}
	if errno := C.iso_push(ss.s, descs, C.int(len(rs))); errno != 0 {
		return &uffd.OpError{Op: "serve", Err: syscall.Errno(errno)}
	}
	return nil
}

// reportErrors passes the loop's recorded errors to Config.OnError.
func (ss *isoSession) reportErrors() {
	var errs [C.ISO_ERRS]C.iso_err
	var dropped C.uint64_t
	n := int(C.iso_drain(ss.s, &errs[0], &dropped))
	if ss.p.cfg.OnError == nil {
		return
	}
	for _, e := range errs[:n] {
		addr, length := uintptr(e.addr), uintptr(e.len)
		switch e.kind {
		case C.ISO_ERR_OUTSIDE:
			ss.p.report(&outsideError{addr})
		case C.ISO_ERR_COPY:
			ss.p.report(&uffd.OpError{Op: "UFFDIO_COPY", Addr: addr, Len: length, Err: syscall.Errno(e.err)})
		case C.ISO_ERR_ZEROPAGE:
			ss.p.report(&uffd.OpError{Op: "UFFDIO_ZEROPAGE", Addr: addr, Len: length, Err: syscall.Errno(e.err)})
		}
	}
	if dropped > 0 {
		ss.p.report(fmt.Errorf("pager: %d more errors of the isolated loop were not recorded", uint64(dropped)))
	}
}
