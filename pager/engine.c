//go:build cgo && linux

// The pager's fault policy and its per-CPU threads: see engine.h, and the
// package documentation for why this is C.

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <linux/userfaultfd.h>

#include "engine.h"
#include "snap.h"

// The build machine's headers may predate Linux 6.6.
#ifndef _UFFDIO_POISON
#define _UFFDIO_POISON (0x08)
struct uffdio_poison {
	struct uffdio_range range;
	__u64 mode;
	__s64 updated;
};
#endif
#ifndef UFFDIO_POISON
#define UFFDIO_POISON _IOWR(UFFDIO, _UFFDIO_POISON, struct uffdio_poison)
#endif

#define PG_DEFER 64            // deferred faults remembered at first
#define PG_READ 1              // messages per read(2): the next is left to the reader of the CPU that raised it
#define PG_GRACE_NS 10000      // a spinning reader leaves a message this long to the reader of its CPU
#define PG_RAN_NS 2000         // a yield this long means another thread ran on the CPU
#define PG_GO_QUIET_NS 2000000 // readers do not spin this long after Go installed pages
#define PG_UNHEEDED 8          // graces in a row nobody used before they stop...
#define PG_NOGRACE_NS 10000000 // ...for this long
#define PG_STREAMS 4    // sequential streams followed by adaptive prefetch
#define PG_ERRS 256     // recorded errors kept for Go
#define PG_STRAYS 1024  // faults in no region kept for a region added later
#define PG_PIECE (256u << 10) // bytes per ioctl of background installs
#define PG_SRCPAGE 12   // a cache's presence bits are per 4 KiB

// ---------------------------------------------------------------------
// Small things.

static inline uint64_t now_ns(void) {
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

static inline void add64(uint64_t *c, uint64_t n) {
	if (n) __atomic_fetch_add(c, n, __ATOMIC_RELAXED);
}

static inline uint64_t ld64(const uint64_t *w) { return __atomic_load_n(w, __ATOMIC_SEQ_CST); }

static void nap_us(long us) {
	struct timespec ts = {0, us * 1000};
	nanosleep(&ts, NULL);
}

// ---------------------------------------------------------------------
// Bitmaps of page indexes, every word accessed atomically.

static inline uint64_t mask(int bit, int64_t n) {
	return n >= 64 ? ~0ull : ((1ull << n) - 1) << bit;
}

static inline int tz(uint64_t w) { return w ? __builtin_ctzll(w) : 64; }

static inline int bm_get(const uint64_t *b, int64_t i) {
	return (int)((ld64(&b[i >> 6]) >> (i & 63)) & 1);
}

static void bm_set(uint64_t *b, int64_t i, int64_t n) {
	while (n > 0) {
		int bit = (int)(i & 63);
		int64_t k = 64 - bit < n ? 64 - bit : n;
		__atomic_fetch_or(&b[i >> 6], mask(bit, k), __ATOMIC_SEQ_CST);
		i += k, n -= k;
	}
}

static void bm_clear(uint64_t *b, int64_t i, int64_t n) {
	while (n > 0) {
		int bit = (int)(i & 63);
		int64_t k = 64 - bit < n ? 64 - bit : n;
		__atomic_fetch_and(&b[i >> 6], ~mask(bit, k), __ATOMIC_SEQ_CST);
		i += k, n -= k;
	}
}

// bm_claim sets the clear bits [i, i+k) for the largest k <= max such that
// all of them were clear, and returns k: 0 when bit i was set.
static int64_t bm_claim(uint64_t *b, int64_t i, int64_t max) {
	int64_t n = 0;
	while (n < max) {
		int64_t j = i + n;
		int bit = (int)(j & 63);
		uint64_t *w = &b[j >> 6];
		int64_t span = 64 - bit < max - n ? 64 - bit : max - n;
		for (;;) {
			uint64_t old = ld64(w);
			int64_t run = tz(old >> bit);
			if (bit + run > 64) run = 64 - bit;
			if (run > span) run = span;
			if (run == 0) return n;
			if (__atomic_compare_exchange_n(w, &old, old | mask(bit, run), 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
				n += run;
				if (run < span) return n;
				break;
			}
		}
	}
	return n;
}

// bm_claim_back claims clear bits going down from i-1 to lo, stopping at
// the first set bit, and returns how many.
static int64_t bm_claim_back(uint64_t *b, int64_t i, int64_t lo) {
	int64_t n = 0;
	for (int64_t j = i - 1; j >= lo; j--) {
		uint64_t *w = &b[j >> 6], m = 1ull << (j & 63);
		for (;;) {
			uint64_t old = ld64(w);
			if (old & m) return n;
			if (__atomic_compare_exchange_n(w, &old, old | m, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) break;
		}
		n++;
	}
	return n;
}

// bm_run returns the length of the run of bits equal to v from i, at most n.
static int64_t bm_run(const uint64_t *b, int64_t i, int64_t n, int v) {
	int64_t k = 0;
	while (k < n) {
		int64_t j = i + k;
		uint64_t w = ld64(&b[j >> 6]);
		if (v) w = ~w;
		int bit = (int)(j & 63);
		int64_t r = tz(w >> bit);
		if (bit + r > 64) r = 64 - bit;
		if (r == 0) break;
		k += r;
		if (bit + r < 64) break;
	}
	return k < n ? k : n;
}

static uint64_t *bm_new(int64_t n) { return calloc((size_t)((n + 63) / 64 + 1), sizeof(uint64_t)); }

static uint64_t *bm_clone(const uint64_t *b, int64_t n) {
	uint64_t *c = bm_new(n);
	if (c)
		for (int64_t i = 0; i < (n + 63) / 64; i++) c[i] = ld64(&b[i]);
	return c;
}

// ---------------------------------------------------------------------
// Pagers, regions, layouts.

// A registered range's page bookkeeping, shared by the regions that events
// split it into. States live as long as their pager.
struct pg_state {
	uint64_t *claimed; // resolved, or being resolved by someone
	uint64_t *done;    // resolved
	uint64_t *zero;    // dropped by the process: the next fault gets zeroes
	int64_t pages;
	pg_state *next;
};

typedef struct {
	uint64_t start, len, psize;
	int64_t pages, base, off; // base: index of start's page in st; off: source offset of start
	uint32_t shift, chunk_shift;
	int32_t id, src, policy, huge;
	const char *data;
	uint64_t *present, *czero;
	int32_t *pins;
	pg_state *st;
} pg_region;

typedef struct {
	int n;
	pg_region r[];
} pg_layout;

typedef struct {
	uint64_t next; // where the stream continues
	int64_t window;
	uint64_t used;
} pg_stream;

typedef struct {
	uint64_t addr, t0;
} pg_deferred;

typedef struct {
	uint64_t addr, t0;
	int woken;
} pg_stray;

// A slot is what one engine thread updates on every fault, on cache lines
// of its own, so that threads serving faults on different CPUs do not
// bounce lines between them: its share of the pager's lock (a reader takes
// its own slot's, a writer every slot's), its counters, and its count of
// faults read and not yet handled. The last slot is shared by every other
// thread (Go's calls). Counters and pending change with cadd.
typedef struct {
	pthread_rwlock_t lock;
	pg_counters c;
	int64_t pending;
} __attribute__((aligned(64))) pg_slot;

struct pg_pager {
	int fd;  // the engine's duplicate of the userfaultfd
	int nfd; // eventfd: Go has something to take
	int events, poison, adaptive, trace_on;
	int64_t pf_min, pf_max;

	// The layout and every bitmap change happen under the lock (the
	// slots' locks together): installs share it from choosing a page's
	// contents to the ioctl's return; events take it exclusively, and with
	// event features a reader holds it exclusively from read(2) to the
	// events applied, so that no copy chosen before an event lands after
	// the process that raised it resumed.
	pg_slot *slots; // per engine thread: lock, counters; the last is shared
	int nslots;
	pg_layout *layout;
	uint64_t gen;   // bumped when UNMAP or REMAP change addresses
	int moved;      // an UNMAP or REMAP was seen
	uint64_t evseq; // bumped when events were applied
	pg_state *states;
	char *zhuge; // a huge page of zeroes (mapped, never written)
	uint64_t zhuge_len;

	pthread_mutex_t smu; // adaptive prefetch streams
	pg_stream st[PG_STREAMS];
	uint64_t tick;

	pthread_mutex_t qmu; // what Go takes
	pg_req *reqs;
	int nreq, capreq;
	pg_err errs[PG_ERRS];
	int nerrs;
	uint64_t dropped;
	uint64_t *trace;
	int ntrace, captrace;
	pg_pager *forks; // children of FORK events, for Go
	int status, fatal;

	pthread_mutex_t dmu; // deferred faults and strays
	pg_deferred *def;
	int ndef, capdef;
	pg_stray stray[PG_STRAYS];
	int nstray;

	int attached; // served by an engine (atomic)
	pg_engine *eng; // the engine serving it, or NULL (atomic)
	int owned;    // each of the engine's threads has a slot of its own (atomic)
	int saved_fl; // file flags before an engine changed them, or -1

	pg_pager *next;      // in the engine's list
	pg_pager *fork_next; // in the parent's forks
	int fork_fd;

	pg_snap *snap;  // write-protect faults go there (snap.c), or NULL
	int snap_users; // readers using snap (atomic)
};

// slot returns the slot of engine thread index s, or the shared one for
// s < 0.
static inline pg_slot *slot(pg_pager *p, int s) {
	int k = p->nslots - 1;
	return &p->slots[s < 0 ? k : s < k ? s : s % k];
}

static inline pg_counters *ctr(pg_pager *p, int s) { return &slot(p, s)->c; }

// cadd adds n to counter c of slot s. A slot no other thread writes (an
// engine thread's own, when every thread has one: p->owned) takes a plain
// add, which Go's relaxed loads may read at any time; a shared one an
// atomic add.
static inline void cadd(pg_pager *p, int s, uint64_t *c, uint64_t n) {
	if (!n) return;
	if (s >= 0 && s < p->nslots - 1 && __atomic_load_n(&p->owned, __ATOMIC_RELAXED))
		__atomic_store_n(c, __atomic_load_n(c, __ATOMIC_RELAXED) + n, __ATOMIC_RELAXED);
	else
		add64(c, n);
}

#define CADD(p, s, field, n) cadd((p), (s), &ctr((p), (s))->field, (n))

// pending_add changes slot s's count of faults read and not yet handled.
static inline void pending_add(pg_pager *p, int s, int64_t d) {
	cadd(p, s, (uint64_t *)&slot(p, s)->pending, (uint64_t)d);
}

static inline void rd_lock(pg_pager *p, int s) { pthread_rwlock_rdlock(&slot(p, s)->lock); }
static inline void rd_unlock(pg_pager *p, int s) { pthread_rwlock_unlock(&slot(p, s)->lock); }

static void wr_lock(pg_pager *p) {
	for (int i = 0; i < p->nslots; i++) pthread_rwlock_wrlock(&p->slots[i].lock);
}

static void wr_unlock(pg_pager *p) {
	for (int i = p->nslots - 1; i >= 0; i--) pthread_rwlock_unlock(&p->slots[i].lock);
}

// wr_trylock takes every slot's lock without waiting, or none (non-zero).
static int wr_trylock(pg_pager *p) {
	for (int i = 0; i < p->nslots; i++) {
		if (pthread_rwlock_trywrlock(&p->slots[i].lock)) {
			while (i-- > 0) pthread_rwlock_unlock(&p->slots[i].lock);
			return 1;
		}
	}
	return 0;
}

static void notify(pg_pager *p) {
	if (p->nfd < 0) return;
	uint64_t one = 1;
	ssize_t r = write(p->nfd, &one, sizeof one);
	(void)r;
}

static void record(pg_pager *p, int kind, int err, uint64_t addr, uint64_t len, int32_t id) {
	pthread_mutex_lock(&p->qmu);
	if (p->nerrs < PG_ERRS) {
		pg_err *e = &p->errs[p->nerrs++];
		e->kind = kind, e->err = err, e->addr = addr, e->len = len, e->id = id, e->pad = 0;
	} else {
		p->dropped++;
	}
	pthread_mutex_unlock(&p->qmu);
	notify(p);
}

static void set_status(pg_pager *p, int bit, int err) {
	pthread_mutex_lock(&p->qmu);
	p->status |= bit;
	if (bit == PG_ST_FATAL && !p->fatal) p->fatal = err;
	pthread_mutex_unlock(&p->qmu);
	notify(p);
}

static int push_req(pg_pager *p, const pg_req *q) {
	pthread_mutex_lock(&p->qmu);
	if (p->nreq == p->capreq) {
		int cap = p->capreq ? 2 * p->capreq : 64;
		pg_req *n = realloc(p->reqs, (size_t)cap * sizeof *n);
		if (!n) {
			pthread_mutex_unlock(&p->qmu);
			return -1;
		}
		p->reqs = n, p->capreq = cap;
	}
	p->reqs[p->nreq++] = *q;
	int first = p->nreq == 1;
	pthread_mutex_unlock(&p->qmu);
	if (first) notify(p);
	return 0;
}

static void trace_fault(pg_pager *p, uint64_t addr) {
	if (!p->trace_on) return;
	pthread_mutex_lock(&p->qmu);
	if (p->ntrace == p->captrace) {
		int cap = p->captrace ? 2 * p->captrace : 4096;
		uint64_t *n = realloc(p->trace, (size_t)cap * sizeof *n);
		if (n) p->trace = n, p->captrace = cap;
	}
	int wake = 0;
	if (p->ntrace < p->captrace) {
		p->trace[p->ntrace++] = addr;
		wake = p->ntrace == 1024;
	} else {
		p->dropped++;
	}
	pthread_mutex_unlock(&p->qmu);
	if (wake) notify(p);
}

static void observe(pg_pager *p, int s, uint64_t t0) {
	uint64_t d = now_ns() - t0;
	int i = d ? 63 - __builtin_clzll(d) : 0;
	if (i >= PG_BUCKETS) i = PG_BUCKETS - 1;
	CADD(p, s, latency[i], 1);
}

static const pg_region *lookup(const pg_layout *l, uint64_t addr) {
	int lo = 0, hi = l->n;
	while (lo < hi) {
		int m = (int)(((unsigned)lo + (unsigned)hi) >> 1);
		if (l->r[m].start + l->r[m].len <= addr) lo = m + 1;
		else hi = m;
	}
	if (lo < l->n && l->r[lo].start <= addr) return &l->r[lo];
	return NULL;
}

static inline uint64_t rend(const pg_region *r) { return r->start + r->len; }
static inline uint64_t page_addr(const pg_region *r, int64_t i) { return r->start + ((uint64_t)i << r->shift); }

static void wake(pg_pager *p, uint64_t start, uint64_t len) {
	if (!len) return;
	struct uffdio_range rg = {.start = start, .len = len};
	while (ioctl(p->fd, UFFDIO_WAKE, &rg) && errno == EINTR) {
	}
}

// ---------------------------------------------------------------------
// Installing pages.

// What page j of r is made of.
enum { K_DATA, K_ZERO };

static int page_kind(const pg_region *r, int64_t j) {
	if (r->src == PG_SRC_ZERO || bm_get(r->st->zero, r->base + j)) return K_ZERO;
	if (r->src == PG_SRC_CACHE && r->czero) {
		int64_t s = (r->off + ((int64_t)j << r->shift)) >> PG_SRCPAGE;
		int64_t n = (int64_t)(r->psize >> PG_SRCPAGE);
		if (bm_run(r->czero, s, n, 1) == n) return K_ZERO;
	}
	return K_DATA;
}

// run_of returns how many pages from lo (at most hi-lo) are of lo's kind.
static int64_t run_of(const pg_region *r, int64_t lo, int64_t hi, int kind) {
	if (r->src == PG_SRC_ZERO) return hi - lo;
	if (r->src != PG_SRC_CACHE || !r->czero) {
		int64_t k = bm_run(r->st->zero, r->base + lo, hi - lo, kind == K_ZERO);
		return k ? k : 1;
	}
	int64_t j = lo + 1;
	while (j < hi && page_kind(r, j) == kind) j++;
	return j - lo;
}

// cache_present returns how many pages from lo (at most n) of a cache
// region are present in its mapping.
static int64_t cache_present(const pg_region *r, int64_t lo, int64_t n) {
	int64_t per = (int64_t)(r->psize >> PG_SRCPAGE);
	int64_t s = (r->off + ((int64_t)lo << r->shift)) >> PG_SRCPAGE;
	return bm_run(r->present, s, n * per, 1) / per;
}

enum { C_FAULT, C_FILL, C_AHEAD };

typedef struct {
	pg_pager *p;
	const pg_region *r;
	const char *buf; // GO: contents of pages from buf_lo
	int64_t buf_lo;
	int64_t f;      // the faulting page, or -1
	uint64_t t0;
	int count;      // C_*
	int err;
	int64_t piece;  // most pages per ioctl, or 0
	int slot;       // the calling thread's slot
} inst;

// ioctl_run resolves pages [lo, hi) of one kind, continuing after partial
// progress and past pages that exist. It returns PG_OK, or the outcome at
// page *at (the pages before it are in place).
static int ioctl_run(inst *in, int64_t lo, int64_t hi, int kind, const char *src, int64_t *at) {
	pg_pager *p = in->p;
	const pg_region *r = in->r;
	uint64_t dst = page_addr(r, lo), end = page_addr(r, hi), off = 0;
	uint64_t existed = 0;
	while (dst < end) {
		uint64_t length = end - dst;
		if (in->piece && length > ((uint64_t)in->piece << r->shift)) length = (uint64_t)in->piece << r->shift;
		int64_t done;
		int err = 0;
		if (kind == K_ZERO && !r->huge) {
			struct uffdio_zeropage z = {.range = {.start = dst, .len = length}};
			if (ioctl(p->fd, UFFDIO_ZEROPAGE, &z)) err = errno;
			done = z.zeropage;
		} else {
			const char *from;
			if (kind == K_ZERO) { // hugetlbfs: one zero huge page at a time
				length = r->psize;
				from = p->zhuge;
			} else {
				from = src + off;
			}
			struct uffdio_copy c = {.dst = dst, .src = (uint64_t)(uintptr_t)from, .len = length};
			if (ioctl(p->fd, UFFDIO_COPY, &c)) err = errno;
			done = c.copy;
		}
		if (!err) {
			dst += length, off += length;
			continue;
		}
		if (done < 0) done = 0;
		done &= ~(int64_t)(r->psize - 1);
		dst += (uint64_t)done, off += (uint64_t)done;
		if (err == EINTR || (err == EAGAIN && done > 0)) continue;
		if (err == EEXIST) {
			// Another resolver won, or the page was there before us:
			// the kernel woke nobody, so wake whoever waits on it.
			CADD(p, in->slot, exists, 1);
			wake(p, dst, r->psize);
			dst += r->psize, off += r->psize;
			existed++;
			continue;
		}
		*at = (int64_t)((dst - r->start) >> r->shift);
		in->err = err;
		uint64_t put = (uint64_t)(*at - lo) - existed;
		CADD(p, in->slot, pages, put);
		CADD(p, in->slot, bytes, put << r->shift);
		if (kind == K_ZERO) CADD(p, in->slot, zeroed, put);
		switch (err) {
		case EAGAIN: return PG_RETRY; // an event is pending
		case ESRCH: return PG_GONE;
		case ENOENT:
		case EINVAL: return PG_NOMAP; // an UNMAP or REMAP is on its way
		case EFAULT: return kind == K_DATA ? PG_SRCERR : PG_FAILED;
		default: return PG_FAILED;
		}
	}
	uint64_t put = (uint64_t)(hi - lo) - existed;
	CADD(p, in->slot, pages, put);
	CADD(p, in->slot, bytes, put << r->shift);
	if (kind == K_ZERO) CADD(p, in->slot, zeroed, put);
	return PG_OK;
}

// account counts what an install put in place: [lo, hi) of r.
static void account(inst *in, int64_t lo, int64_t hi) {
	if (lo >= hi) return;
	pg_pager *p = in->p;
	uint64_t n = (uint64_t)(hi - lo);
	switch (in->count) {
	case C_FAULT:
		if (in->f >= lo && in->f < hi) {
			observe(p, in->slot, in->t0);
			n--;
		}
		CADD(p, in->slot, prefetched, n);
		break;
	case C_AHEAD: CADD(p, in->slot, prefetched, n); break;
	case C_FILL: CADD(p, in->slot, filled, n); break;
	}
}

// install resolves the claimed pages [lo, hi) of r, marking them done. On
// any outcome but PG_OK it sets *at to the first page not in place; the
// pages from *at stay claimed for PG_NEED and PG_SRCERR, and are released
// and their threads woken otherwise. The caller holds the pager's lock (shared).
static int install(inst *in, int64_t lo, int64_t hi, int64_t *at) {
	pg_pager *p = in->p;
	const pg_region *r = in->r;
	pg_state *st = r->st;
	int out = PG_OK;
	int64_t cur = lo;
	while (cur < hi) {
		int kind = page_kind(r, cur);
		int64_t k = run_of(r, cur, hi, kind), stop = cur + k;
		const char *src = NULL;
		int32_t *pin = NULL;
		if (kind == K_DATA) {
			switch (r->src) {
			case PG_SRC_MAPPED:
				src = r->data + r->off + ((int64_t)cur << r->shift);
				break;
			case PG_SRC_GO:
				if (!in->buf) {
					out = PG_NEED;
					goto stopped;
				}
				src = in->buf + ((cur - in->buf_lo) << r->shift);
				break;
			case PG_SRC_CACHE: {
				// Pin the chunk, then look: an evictor clears the
				// presence bits, then waits for the pins to drop.
				int64_t b = r->off + ((int64_t)cur << r->shift);
				int64_t chunk_end = ((b >> r->chunk_shift) + 1) << r->chunk_shift;
				int64_t in_chunk = (chunk_end - b) >> r->shift;
				if (in_chunk < 1) in_chunk = 1;
				if (k > in_chunk) k = in_chunk;
				pin = &r->pins[b >> r->chunk_shift];
				__atomic_fetch_add(pin, 1, __ATOMIC_SEQ_CST);
				k = cache_present(r, cur, k);
				if (k == 0) {
					__atomic_fetch_sub(pin, 1, __ATOMIC_SEQ_CST);
					out = PG_NEED;
					goto stopped;
				}
				stop = cur + k;
				src = r->data + b;
				break;
			}
			}
		}
		int64_t fail = stop;
		out = ioctl_run(in, cur, stop, kind, src, &fail);
		if (pin) __atomic_fetch_sub(pin, 1, __ATOMIC_SEQ_CST);
		if (fail > cur) {
			if (kind == K_ZERO) bm_clear(st->zero, r->base + cur, fail - cur);
			bm_set(st->done, r->base + cur, fail - cur);
			account(in, cur, fail);
		}
		cur = fail;
		if (out != PG_OK) goto stopped;
	}
	return PG_OK;
stopped:
	*at = cur;
	switch (out) {
	case PG_NEED:
	case PG_SRCERR:
		break; // still claimed, for Go
	case PG_GONE:
		bm_clear(st->claimed, r->base + cur, hi - cur);
		break;
	case PG_FAILED:
		record(p, PG_ERR_IOCTL, in->err, page_addr(r, cur), (uint64_t)(hi - cur) << r->shift, r->id);
		// fall through
	default:
		// Every outcome but "installed" wakes what it claimed: a thread
		// whose fault was dropped because we held the page faults again.
		bm_clear(st->claimed, r->base + cur, hi - cur);
		wake(p, page_addr(r, cur), (uint64_t)(hi - cur) << r->shift);
		break;
	}
	return out;
}

// reinstall answers a fault on a page resolved before: usually a repeated
// message (several threads faulted on it, or a fault was interrupted),
// which finds the page there (EEXIST) and wakes the thread; but a page can
// go away without an event (no EVENT_REMOVE, MADV_REMOVE through another
// mapping, a hole punched in shared memory), and the kernel's answer for a
// dropped page is zeroes: so is ours.
static int reinstall(pg_pager *p, int s, const pg_region *r, int64_t i) {
	inst in = {.p = p, .r = r, .f = -1, .count = C_FILL, .slot = s};
	int64_t at = i + 1;
	int out = ioctl_run(&in, i, i + 1, K_ZERO, NULL, &at);
	if (out == PG_FAILED) record(p, PG_ERR_IOCTL, in.err, page_addr(r, i), r->psize, r->id);
	else if (out != PG_GONE) wake(p, page_addr(r, i), r->psize);
	return out;
}

// ---------------------------------------------------------------------
// Faults.

static inline int64_t pages_of(const pg_region *r, int64_t bytes) {
	int64_t n = (bytes + (int64_t)r->psize - 1) >> r->shift;
	return n > 1 ? n : 1;
}

// window chooses the pages to resolve for a fault at page i of r: [lo, hi)
// now, and `ahead` more after hi in the background.
static void window(pg_pager *p, const pg_region *r, int64_t i, uint64_t addr, int64_t *lo, int64_t *hi, int64_t *ahead) {
	*ahead = 0;
	if (!p->adaptive) {
		if (p->pf_min <= (int64_t)r->psize) {
			*lo = i, *hi = i + 1;
			return;
		}
		int64_t n = pages_of(r, p->pf_min);
		*lo = i - i % n;
		*hi = *lo + n < r->pages ? *lo + n : r->pages;
		return;
	}
	int64_t minw = pages_of(r, p->pf_min), maxw = pages_of(r, p->pf_max);
	uint64_t page = addr & ~(r->psize - 1);
	pthread_mutex_lock(&p->smu);
	p->tick++;
	pg_stream *s = NULL;
	for (int k = 0; k < PG_STREAMS; k++) {
		if (p->st[k].next == page && p->st[k].window > 0) {
			s = &p->st[k];
			break;
		}
	}
	int64_t a = 0;
	if (s) {
		// Sequential: double the window, and resolve the next one
		// ahead of the thread.
		s->window = s->window * 2 < maxw ? s->window * 2 : maxw;
		a = s->window;
	} else {
		// A new stream, or random access: replace the least recently
		// used stream and start over at the smallest window.
		s = &p->st[0];
		for (int k = 0; k < PG_STREAMS; k++)
			if (p->st[k].used < s->used) s = &p->st[k];
		s->window = minw;
	}
	s->used = p->tick;
	int64_t h = i + s->window < r->pages ? i + s->window : r->pages;
	if (a > r->pages - h) a = r->pages - h;
	s->next = page_addr(r, h + a);
	pthread_mutex_unlock(&p->smu);
	*lo = i, *hi = h, *ahead = a;
}

static void fill_req(pg_req *q, const pg_region *r, uint32_t kind, int64_t lo, int64_t hi, int64_t f, uint64_t t0, int urgent) {
	memset(q, 0, sizeof *q);
	q->kind = kind;
	q->id = r->id;
	q->urgent = urgent;
	q->addr = page_addr(r, lo);
	q->len = (uint64_t)(hi - lo) << r->shift;
	q->psize = r->psize;
	q->fault = f >= lo && f < hi ? page_addr(r, f) : 0;
	q->off = r->off + ((int64_t)lo << r->shift);
	q->t0 = t0;
	q->st = r->st;
	q->idx = r->base + lo;
}

// to_go hands the claimed pages [lo, hi) of r to Go after install stopped
// with out (PG_NEED or PG_SRCERR). On no memory for the request, the pages
// are released and their threads woken: they fault again.
static void to_go(pg_pager *p, const pg_region *r, int out, int err, int64_t lo, int64_t hi, int64_t f, uint64_t t0, int urgent) {
	pg_req q;
	uint32_t kind = out == PG_SRCERR ? PG_REQ_RETRY : r->src == PG_SRC_CACHE ? PG_REQ_FETCH : PG_REQ_READ;
	fill_req(&q, r, kind, lo, hi, f, t0, urgent);
	q.err = err;
	if (push_req(p, &q)) {
		bm_clear(r->st->claimed, r->base + lo, hi - lo);
		wake(p, q.addr, q.len);
		record(p, PG_ERR_IOCTL, ENOMEM, q.addr, q.len, r->id);
	}
}

static void defer_fault(pg_pager *p, uint64_t addr, uint64_t t0) {
	pthread_mutex_lock(&p->dmu);
	if (p->ndef == p->capdef) {
		int cap = p->capdef ? 2 * p->capdef : PG_DEFER;
		pg_deferred *d = realloc(p->def, (size_t)cap * sizeof *d);
		if (d) p->def = d, p->capdef = cap;
	}
	if (p->ndef < p->capdef) {
		p->def[p->ndef].addr = addr, p->def[p->ndef].t0 = t0;
		p->ndef++;
		pthread_mutex_unlock(&p->dmu);
		return;
	}
	pthread_mutex_unlock(&p->dmu);
	// No memory to remember it: let the thread fault again.
	wake(p, addr, (uint64_t)sysconf(_SC_PAGESIZE));
}

// outside keeps a fault in no region until a region that holds it is
// added (pg_add), reporting each address once. After the process moved or
// unmapped memory, the thread faulted where memory was: it is woken once,
// to fault again where memory is now, or get SIGSEGV.
static void outside(pg_pager *p, int s, uint64_t addr, uint64_t t0) {
	CADD(p, s, outside, 1);
	uint64_t pg = addr & ~(uint64_t)(sysconf(_SC_PAGESIZE) - 1);
	int moved = __atomic_load_n(&p->moved, __ATOMIC_SEQ_CST), wakeit = 0, fresh = 1;
	pthread_mutex_lock(&p->dmu);
	for (int i = 0; i < p->nstray; i++) {
		if (p->stray[i].addr == pg) {
			fresh = 0;
			if (moved && !p->stray[i].woken) p->stray[i].woken = wakeit = 1;
			break;
		}
	}
	if (fresh && p->nstray < PG_STRAYS) {
		p->stray[p->nstray].addr = pg, p->stray[p->nstray].t0 = t0;
		p->stray[p->nstray].woken = wakeit = moved;
		p->nstray++;
	}
	pthread_mutex_unlock(&p->dmu);
	if (fresh) record(p, PG_ERR_OUTSIDE, 0, pg, 0, -1);
	if (wakeit) wake(p, pg, (uint64_t)sysconf(_SC_PAGESIZE));
}

typedef struct pg_thread pg_thread;
static void post_ahead(pg_thread *th, pg_pager *p, const pg_req *q);
static int th_slot(const pg_thread *th);

// fault resolves one page-fault message read by th (NULL: Go's thread).
static void fault(pg_thread *th, pg_pager *p, uint64_t addr, uint64_t t0) {
	uint64_t ev = ld64(&p->evseq);
	int deferred = 0, s = th_slot(th);
	rd_lock(p, s);
	const pg_region *r = lookup(p->layout, addr);
	if (!r) {
		rd_unlock(p, s);
		outside(p, s, addr, t0);
		return;
	}
	int64_t i = (int64_t)((addr - r->start) >> r->shift), idx = r->base + i;
	int64_t lo, hi, ahead, n = 0;
	// A page being resolved (ahead of this thread, most often) is not a
	// new access: it leaves the prefetch streams as they are.
	if (!bm_get(r->st->claimed, idx)) {
		window(p, r, i, addr, &lo, &hi, &ahead);
		n = bm_claim(r->st->claimed, idx, hi - i);
	}
	if (n == 0) {
		// Someone holds the page: the resolver installing it wakes the
		// thread, whatever its outcome. Or it was resolved already.
		if (bm_get(r->st->done, idx) && reinstall(p, s, r, i) == PG_GONE) set_status(p, PG_ST_GONE, 0);
		rd_unlock(p, s);
		return;
	}
	trace_fault(p, page_addr(r, i));
	int64_t back = lo < i ? bm_claim_back(r->st->claimed, idx, r->base + lo) : 0;
	if (ahead > 0 && n == hi - i) {
		// A sequential stream: the next window goes to another CPU
		// first, so that it is resolved while this one is.
		int64_t k = bm_claim(r->st->claimed, r->base + i + n, ahead);
		if (k > 0) {
			pg_req q;
			int go = r->src == PG_SRC_GO || r->src == PG_SRC_CACHE;
			fill_req(&q, r, r->src == PG_SRC_GO ? PG_REQ_READ : PG_REQ_FETCH, i + n, i + n + k, -1, t0, 0);
			if (!go) post_ahead(th, p, &q);
			else if (push_req(p, &q)) bm_clear(r->st->claimed, r->base + i + n, k);
		}
	}
	inst in = {.p = p, .r = r, .f = i, .t0 = t0, .count = C_FAULT, .slot = s};
	int64_t at = i + n;
	int out = install(&in, i - back, i + n, &at);
	switch (out) {
	case PG_NEED:
	case PG_SRCERR:
		to_go(p, r, out, in.err, at, i + n, i, t0, at <= i);
		break;
	case PG_RETRY:
		if (at <= i) deferred = 1;
		break;
	case PG_GONE:
		set_status(p, PG_ST_GONE, 0);
		break;
	}
	rd_unlock(p, s);
	if (deferred) {
		defer_fault(p, addr, t0);
		// The event may have been applied meanwhile by another reader,
		// which would then not know of this fault.
		if (ld64(&p->evseq) != ev) {
			pg_deferred d[1];
			pthread_mutex_lock(&p->dmu);
			int have = p->ndef > 0;
			if (have) d[0] = p->def[--p->ndef];
			pthread_mutex_unlock(&p->dmu);
			if (have) fault(th, p, d[0].addr, d[0].t0);
		}
	}
}

static void retry_deferred(pg_thread *th, pg_pager *p) {
	pthread_mutex_lock(&p->dmu);
	int n = p->ndef;
	pg_deferred *d = n ? malloc((size_t)n * sizeof *d) : NULL;
	if (d) {
		memcpy(d, p->def, (size_t)n * sizeof *d);
		p->ndef = 0;
	}
	pthread_mutex_unlock(&p->dmu);
	if (!d) return;
	for (int i = 0; i < n; i++) fault(th, p, d[i].addr, d[i].t0);
	free(d);
}

// ---------------------------------------------------------------------
// Events.

static pg_layout *layout_new(int n) {
	pg_layout *l = calloc(1, sizeof *l + (size_t)(n ? n : 1) * sizeof(pg_region));
	return l;
}

static int cmp_region(const void *a, const void *b) {
	uint64_t x = ((const pg_region *)a)->start, y = ((const pg_region *)b)->start;
	return x < y ? -1 : x > y;
}

// sub returns the part [a, b) of r, sharing its state.
static pg_region sub(const pg_region *r, uint64_t a, uint64_t b) {
	pg_region n = *r;
	int64_t k = (int64_t)((a - r->start) >> r->shift);
	n.start = a, n.len = b - a;
	n.base = r->base + k;
	n.pages = (int64_t)((b - a) >> r->shift);
	n.off = r->off + (k << r->shift);
	return n;
}

// cut appends the regions of in less [start, end) to out (which has room
// for 2*in->n more), splitting those that straddle it.
static void cut(pg_layout *out, const pg_layout *in, uint64_t start, uint64_t end) {
	for (int i = 0; i < in->n; i++) {
		const pg_region *r = &in->r[i];
		if (end <= r->start || rend(r) <= start) {
			out->r[out->n++] = *r;
			continue;
		}
		uint64_t a = start & ~(r->psize - 1);
		if (r->start < a) out->r[out->n++] = sub(r, r->start, a);
		uint64_t e = (end + r->psize - 1) & ~(r->psize - 1);
		if (e < rend(r)) out->r[out->n++] = sub(r, e, rend(r));
	}
}

static void replace(pg_pager *p, pg_layout *l, int moved) {
	qsort(l->r, (size_t)l->n, sizeof l->r[0], cmp_region);
	free(p->layout);
	p->layout = l;
	if (moved) {
		__atomic_fetch_add(&p->gen, 1, __ATOMIC_SEQ_CST);
		__atomic_store_n(&p->moved, 1, __ATOMIC_SEQ_CST);
	}
}

static int ev_unmap(pg_pager *p, uint64_t start, uint64_t end) {
	pg_layout *l = layout_new(2 * p->layout->n);
	if (!l) return -1;
	cut(l, p->layout, start, end);
	replace(p, l, 1);
	return 0;
}

static int ev_remap(pg_pager *p, uint64_t from, uint64_t to, uint64_t len) {
	const pg_layout *o = p->layout;
	pg_layout *a = layout_new(2 * o->n), *b = layout_new(4 * o->n + o->n);
	if (!a || !b) {
		free(a), free(b);
		return -1;
	}
	cut(a, o, from, from + len);
	cut(b, a, to, to + len); // whatever was there is gone
	for (int i = 0; i < o->n; i++) {
		const pg_region *r = &o->r[i];
		uint64_t x = from > r->start ? from : r->start;
		uint64_t y = from + len < rend(r) ? from + len : rend(r);
		if (x < y) {
			pg_region n = sub(r, x, y);
			n.start = to + (x - from);
			b->r[b->n++] = n;
		}
	}
	free(a);
	replace(p, b, 1);
	return 0;
}

// removed marks the whole pages of [start, end) as dropped by the process:
// their next fault gets zeroes. A page being installed stays claimed: its
// install, which has not chosen its contents yet (it waits for the lock),
// sees the mark and installs zeroes.
static void removed(pg_pager *p, uint64_t start, uint64_t end) {
	const pg_layout *l = p->layout;
	for (int k = 0; k < l->n; k++) {
		const pg_region *r = &l->r[k];
		uint64_t a = start > r->start ? start : r->start;
		uint64_t b = end < rend(r) ? end : rend(r);
		if (a >= b) continue;
		int64_t i = (int64_t)((a - r->start + r->psize - 1) >> r->shift);
		int64_t j = (int64_t)((b - r->start) >> r->shift);
		if (i >= j) continue;
		pg_state *st = r->st;
		bm_set(st->zero, r->base + i, j - i);
		for (int64_t x = r->base + i, e = r->base + j; x < e;) {
			int bit = (int)(x & 63);
			int64_t n = 64 - bit < e - x ? 64 - bit : e - x;
			uint64_t m = mask(bit, n);
			uint64_t d = __atomic_fetch_and(&st->done[x >> 6], ~m, __ATOMIC_SEQ_CST) & m;
			__atomic_fetch_and(&st->claimed[x >> 6], ~d, __ATOMIC_SEQ_CST);
			x += n;
		}
	}
}

static pg_pager *fork_pager(pg_pager *p, int fd);

// events applies a batch's non-fault events. The caller holds the pager's lock
// exclusively.
static void events(pg_pager *p, int s, struct uffd_msg *m, int n) {
	int any = 0;
	for (int i = 0; i < n; i++) {
		int bad = 0;
		switch (m[i].event) {
		case UFFD_EVENT_PAGEFAULT:
			continue;
		case UFFD_EVENT_REMOVE:
			CADD(p, s, removes, 1);
			removed(p, m[i].arg.remove.start, m[i].arg.remove.end);
			break;
		case UFFD_EVENT_UNMAP:
			CADD(p, s, unmaps, 1);
			bad = ev_unmap(p, m[i].arg.remove.start, m[i].arg.remove.end);
			break;
		case UFFD_EVENT_REMAP:
			CADD(p, s, remaps, 1);
			bad = ev_remap(p, m[i].arg.remap.from, m[i].arg.remap.to, m[i].arg.remap.len);
			break;
		case UFFD_EVENT_FORK: {
			CADD(p, s, forks, 1);
			pg_pager *c = fork_pager(p, (int)m[i].arg.fork.ufd);
			if (!c) {
				close((int)m[i].arg.fork.ufd);
				bad = 1;
				break;
			}
			pthread_mutex_lock(&p->qmu);
			c->fork_next = p->forks;
			p->forks = c;
			pthread_mutex_unlock(&p->qmu);
			notify(p);
			break;
		}
		}
		if (bad) set_status(p, PG_ST_FATAL, ENOMEM);
		any = 1;
	}
	if (any) __atomic_fetch_add(&p->evseq, 1, __ATOMIC_SEQ_CST);
}

// ---------------------------------------------------------------------
// Threads.

enum { M_EPOLL, M_BLOCK };

struct pg_thread {
	pg_engine *e;
	int idx, cpu, started;
	pthread_t tid;
	int ep, cfd;
	int quit;
	uint64_t seq; // odd while handling what an epoll_wait returned
	int mode;
	pg_pager *only; // M_BLOCK
	int os_tid;
	uint64_t last;    // when this reader last read a message (now_ns, atomic)
	uint64_t nograce; // until when it takes what it sees at once (spin)
	int unheeded;     // graces in a row that no other reader used
	struct uffd_msg msgs[PG_READ];
};

// th_slot is the slot of reader th, or the shared one for Go's thread.
static int th_slot(const pg_thread *th) { return th ? th->idx : -1; }

typedef struct {
	pg_pager *p;
	pg_req q;
} pg_job;

typedef struct {
	pg_engine *e;
	int idx, cpu, started;
	pthread_t tid;
	pthread_mutex_t mu;
	pthread_cond_t cv, idle;
	pg_job *q;
	int n, cap;
	int stop;
	pg_pager *cur;
	int os_tid;
	int busy; // has jobs or runs one (atomic): its CPU's reader does not spin
} pg_worker;

struct pg_engine {
	int n;
	int *cpus;
	pg_thread *th;
	pg_worker *wk;
	pthread_mutex_t mu;
	pg_pager *pagers;
	int npagers;
	int mode;
	int go_installs;  // installs Go is making in the engine's pagers (atomic)
	uint64_t go_last; // when the last one ended (now_ns, atomic)
	int64_t spin_ns; // how long readers spin after the last message; 0: never
};

static void thread_setup(int cpu, const char *name, int idx, int *os_tid) {
	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, NULL);
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	pthread_setaffinity_np(pthread_self(), sizeof set, &set);
	char n[16];
	snprintf(n, sizeof n, "%s%d", name, idx);
	pthread_setname_np(pthread_self(), n);
	__atomic_store_n(os_tid, (int)syscall(SYS_gettid), __ATOMIC_SEQ_CST);
}

// snap_fault gives a write-protect fault to p's snap, if it has one.
static int snap_fault(pg_pager *p, uint64_t addr, uint64_t t0) {
	__atomic_fetch_add(&p->snap_users, 1, __ATOMIC_SEQ_CST);
	pg_snap *s = __atomic_load_n(&p->snap, __ATOMIC_SEQ_CST);
	if (s) ps_fault(s, addr, t0);
	__atomic_fetch_sub(&p->snap_users, 1, __ATOMIC_SEQ_CST);
	return s != NULL;
}

// pg_set_snap routes p's write-protect faults to s (NULL: to the pager's
// own policy again). When it returns, no reader uses the old one.
void pg_set_snap(pg_pager *p, pg_snap *s) {
	__atomic_store_n(&p->snap, s, __ATOMIC_SEQ_CST);
	while (__atomic_load_n(&p->snap_users, __ATOMIC_SEQ_CST)) nap_us(10);
}

// batch handles the messages a reader read from p. locked: the reader holds
// the pager's lock exclusively (event features), released here.
static void batch(pg_thread *th, pg_pager *p, int k, int locked) {
	uint64_t t0 = now_ns();
	int faults = 0, evs = 0;
	for (int i = 0; i < k; i++) {
		if (th->msgs[i].event == UFFD_EVENT_PAGEFAULT) faults++;
		else evs++;
	}
	if (evs) {
		if (!locked) wr_lock(p);
		events(p, th->idx, th->msgs, k);
		if (!locked) wr_unlock(p);
	}
	if (faults) {
		CADD(p, th->idx, faults, (uint64_t)faults);
		pending_add(p, th->idx, faults);
	}
	if (locked) wr_unlock(p);
	if (evs && __atomic_load_n(&p->ndef, __ATOMIC_SEQ_CST)) retry_deferred(th, p);
	for (int i = 0; i < k; i++) {
		if (th->msgs[i].event != UFFD_EVENT_PAGEFAULT) continue;
		if (!(th->msgs[i].arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WP) || !snap_fault(p, th->msgs[i].arg.pagefault.address, t0))
			fault(th, p, th->msgs[i].arg.pagefault.address, t0);
		pending_add(p, th->idx, -1);
	}
}

// serve_epoll reads and handles what p has; it returns whether it read
// anything.
static int serve_epoll(pg_thread *th, pg_pager *p) {
	if (p->events && wr_trylock(p)) {
		// Busy: another reader reads, or installs are in flight. Every
		// reader wakes for every message; the one on the faulting CPU
		// usually read it already. Wait for the lock only if something is
		// still unread, so as not to make the others wake us.
		struct pollfd pf = {.fd = p->fd, .events = POLLIN};
		if (poll(&pf, 1, 0) <= 0 || !(pf.revents & POLLIN)) return 0;
		wr_lock(p);
	}
	ssize_t n = read(p->fd, th->msgs, sizeof th->msgs);
	if (n <= 0) {
		int e = n < 0 ? errno : EIO;
		if (p->events) wr_unlock(p);
		if (e != EAGAIN && e != EINTR) {
			set_status(p, PG_ST_FATAL, e);
			epoll_ctl(th->ep, EPOLL_CTL_DEL, p->fd, NULL);
		}
		return 0;
	}
	__atomic_store_n(&th->last, now_ns(), __ATOMIC_RELAXED);
	batch(th, p, (int)(n / (ssize_t)sizeof th->msgs[0]), p->events);
	return 1;
}

// active reports whether a reader of e read a message in the last spin_ns.
static int active(pg_engine *e, uint64_t t) {
	for (int i = 0; i < e->n; i++)
		if ((int64_t)(t - __atomic_load_n(&e->th[i].last, __ATOMIC_RELAXED)) < e->spin_ns) return 1;
	return 0;
}

// ready looks, without waiting, for something to read: on th's pager
// (M_BLOCK, returning 1), or in th's epoll (filling evs, returning how
// many).
static int ready(pg_thread *th, struct epoll_event *evs, int cap) {
	if (th->mode == M_BLOCK) {
		struct pollfd pf = {.fd = th->only->fd, .events = POLLIN};
		return poll(&pf, 1, 0) > 0 && (pf.revents & (POLLIN | POLLERR | POLLHUP));
	}
	int k = epoll_wait(th->ep, evs, cap, 0);
	return k > 0 ? k : 0;
}

// spin looks for work without sleeping while the engine serves faults
// (until spin_ns after any reader last read a message), yielding the CPU
// to any thread that wants it, and returns what ready found; 0 once the
// engine is idle, when the reader should block in the kernel.
//
// A reader blocked there is woken by every message, and waking a thread on
// an idle CPU is what costs a fault most on a virtual machine (an
// interrupt into a halted vCPU, several microseconds of the faulting
// thread's time); a spinning reader is not on the userfaultfd's wait
// queue, so a fault raised beside it wakes nobody.
//
// What shows up right after another thread ran on this CPU (the faulting
// thread, which stopped to fault) is taken at once, and so is what is
// there when the reader comes back from serving (local: the thread it woke
// ran here meanwhile and may have faulted again). What shows up while the
// reader spins on an otherwise idle CPU was raised on another one, whose
// reader takes it in a few microseconds: it is left to that reader for
// PG_GRACE_NS first, unless the engine has one reader, or PG_UNHEEDED
// graces in a row went unused (the faulting threads run on CPUs the engine
// has no reader on).
//
// A reader whose CPU's worker has work does not spin, nor does one of an
// engine whose pagers Go installs pages into (or did, within
// PG_GO_QUIET_NS): installing needs the CPUs more than the next fault
// needs a reader awake.
static int spin(pg_thread *th, struct epoll_event *evs, int cap, int local) {
	pg_engine *e = th->e;
	uint64_t seen = 0;
	for (;;) {
		uint64_t t = now_ns();
		if (!active(e, t) || __atomic_load_n(&e->wk[th->idx].busy, __ATOMIC_RELAXED) ||
		    __atomic_load_n(&e->go_installs, __ATOMIC_RELAXED) ||
		    (int64_t)(t - __atomic_load_n(&e->go_last, __ATOMIC_RELAXED)) < PG_GO_QUIET_NS)
			return 0;
		int k = ready(th, evs, cap);
		if (k > 0) {
			// No grace with no other reader, or lately unheeded: the
			// faulting threads run where no reader of this engine does.
			if (local || e->n == 1 || t < th->nograce) return k;
			if (!seen) {
				seen = t;
			} else if (t - seen >= PG_GRACE_NS) {
				if (++th->unheeded >= PG_UNHEEDED) th->nograce = t + PG_NOGRACE_NS, th->unheeded = 0;
				return k;
			}
		} else {
			if (seen) th->unheeded = 0; // another reader took it: the grace works
			seen = 0;
		}
		uint64_t y = now_ns();
		sched_yield();
		local = now_ns() - y > PG_RAN_NS;
	}
}

static void *epoll_main(void *arg) {
	pg_thread *th = arg;
	thread_setup(th->cpu, "uffd-r", th->idx, &th->os_tid);
	struct epoll_event evs[16];
	int served = 0;
	for (;;) {
		int k = th->e->spin_ns > 0 ? spin(th, evs, 16, served) : 0;
		if (k == 0) k = epoll_wait(th->ep, evs, 16, -1);
		served = 0;
		if (k < 0) {
			if (errno == EINTR) continue;
			break;
		}
		__atomic_fetch_add(&th->seq, 1, __ATOMIC_SEQ_CST);
		int quit = 0;
		for (int i = 0; i < k; i++) {
			pg_pager *p = evs[i].data.ptr;
			if (!p) {
				uint64_t v;
				ssize_t r = read(th->cfd, &v, sizeof v);
				(void)r;
				quit = __atomic_load_n(&th->quit, __ATOMIC_SEQ_CST);
				continue;
			}
			if (__atomic_load_n(&p->attached, __ATOMIC_SEQ_CST) && serve_epoll(th, p)) served = 1;
		}
		__atomic_fetch_add(&th->seq, 1, __ATOMIC_SEQ_CST);
		if (quit) break;
	}
	return NULL;
}

// block_main reads its pager's userfaultfd with read(2) alone, one system
// call per fault (no ordering against events is needed, since the pager
// has none). Without spinning the descriptor blocks; with it the
// descriptor is non-blocking, and a read that finds nothing spins, then
// waits in poll(2). It is stopped with pthread_cancel, which acts only
// inside those waits.
static void *block_main(void *arg) {
	pg_thread *th = arg;
	pg_pager *p = th->only;
	thread_setup(th->cpu, "uffd-r", th->idx, &th->os_tid);
	for (;;) {
		int old;
		pthread_setcancelstate(PTHREAD_CANCEL_ENABLE, &old);
		ssize_t n = read(p->fd, th->msgs, sizeof th->msgs);
		int e = errno;
		pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &old);
		if (n <= 0) {
			if (n < 0 && e == EINTR) continue;
			if (n < 0 && e == EAGAIN) {
				pthread_setcancelstate(PTHREAD_CANCEL_ENABLE, &old);
				if (th->e->spin_ns <= 0 || !spin(th, NULL, 0, 0)) {
					struct pollfd pf = {.fd = p->fd, .events = POLLIN};
					poll(&pf, 1, -1);
				}
				pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &old);
				continue;
			}
			set_status(p, PG_ST_FATAL, n < 0 ? e : EIO);
			break;
		}
		__atomic_store_n(&th->last, now_ns(), __ATOMIC_RELAXED);
		batch(th, p, (int)(n / (ssize_t)sizeof th->msgs[0]), 0);
		if (__atomic_load_n(&p->ndef, __ATOMIC_SEQ_CST)) {
			nap_us(50);
			retry_deferred(th, p);
		}
	}
	// Wait to be cancelled.
	for (;;) {
		pthread_setcancelstate(PTHREAD_CANCEL_ENABLE, NULL);
		pause();
	}
	return NULL;
}

// Background installs: the part of an adaptive window ahead of the thread,
// on another CPU than the faulting one, so that it goes on while the thread
// runs.

static int validate_req(pg_pager *p, const pg_req *q, const pg_region **rp) {
	const pg_region *r = lookup(p->layout, q->addr);
	if (!r || r->st != q->st || r->base + (int64_t)((q->addr - r->start) >> r->shift) != q->idx || q->addr + q->len > rend(r))
		return 0;
	*rp = r;
	return 1;
}

// do_req installs a request's pages (the caller holds the pager's lock, shared).
static int do_req(pg_pager *p, int s, const pg_req *q, const char *buf, int count, int64_t piece, uint64_t *at, int *err) {
	const pg_region *r;
	int64_t pages = (int64_t)(q->len / q->psize);
	if (!validate_req(p, q, &r)) {
		// Moved or unmapped since it was claimed: release the pages and
		// wake their threads at the old place; they fault where memory
		// is now, or get SIGSEGV.
		bm_clear(q->st->claimed, q->idx, pages);
		wake(p, q->addr, q->len);
		*at = q->addr;
		return PG_NOMAP;
	}
	int64_t lo = (int64_t)((q->addr - r->start) >> r->shift);
	int64_t f = q->fault ? (int64_t)((q->fault - r->start) >> r->shift) : -1;
	inst in = {.p = p, .r = r, .buf = buf, .buf_lo = lo, .f = f, .t0 = q->t0, .count = count, .piece = piece, .slot = s};
	int64_t stop = lo + pages;
	int out = install(&in, lo, lo + pages, &stop);
	*at = page_addr(r, stop);
	*err = in.err;
	if (out == PG_GONE) set_status(p, PG_ST_GONE, 0);
	return out;
}

static void run_job(pg_job *j, int s) {
	pg_pager *p = j->p;
	uint64_t at;
	int err = 0;
	rd_lock(p, s);
	int out = do_req(p, s, &j->q, NULL, C_AHEAD, PG_PIECE / j->q.psize, &at, &err);
	if (out == PG_SRCERR) {
		pg_req q = j->q;
		uint64_t skip = at - q.addr;
		q.kind = PG_REQ_RETRY, q.err = err;
		q.addr = at, q.len -= skip, q.off += (int64_t)skip, q.idx += (int64_t)(skip / q.psize);
		if (push_req(p, &q)) {
			bm_clear(q.st->claimed, q.idx, (int64_t)(q.len / q.psize));
			wake(p, q.addr, q.len);
		}
	}
	rd_unlock(p, s);
}

static void *worker_main(void *arg) {
	pg_worker *w = arg;
	thread_setup(w->cpu, "uffd-w", w->idx, &w->os_tid);
	pthread_mutex_lock(&w->mu);
	for (;;) {
		while (!w->n && !w->stop) pthread_cond_wait(&w->cv, &w->mu);
		if (!w->n) break;
		pg_job j = w->q[0];
		memmove(w->q, w->q + 1, (size_t)(w->n - 1) * sizeof *w->q);
		w->n--;
		w->cur = j.p;
		pthread_mutex_unlock(&w->mu);
		run_job(&j, w->e->n + w->idx);
		pthread_mutex_lock(&w->mu);
		w->cur = NULL;
		__atomic_store_n(&w->busy, w->n > 0, __ATOMIC_RELAXED);
		pthread_cond_broadcast(&w->idle);
	}
	pthread_mutex_unlock(&w->mu);
	return NULL;
}

// post_ahead gives a background install to the worker of the next CPU
// (the faulting thread runs on th's). Without a worker (Go's thread, or no
// memory) it is done here.
static void post_ahead(pg_thread *th, pg_pager *p, const pg_req *q) {
	if (th) {
		pg_engine *e = th->e;
		pg_worker *w = &e->wk[(th->idx + 1) % e->n];
		pthread_mutex_lock(&w->mu);
		if (w->n == w->cap) {
			int cap = w->cap ? 2 * w->cap : 16;
			pg_job *n = realloc(w->q, (size_t)cap * sizeof *n);
			if (n) w->q = n, w->cap = cap;
		}
		if (w->n < w->cap && !w->stop) {
			w->q[w->n].p = p, w->q[w->n].q = *q;
			w->n++;
			__atomic_store_n(&w->busy, 1, __ATOMIC_RELAXED);
			pthread_cond_signal(&w->cv);
			pthread_mutex_unlock(&w->mu);
			return;
		}
		pthread_mutex_unlock(&w->mu);
	}
	// Here, holding the lock already. A source error is left to the
	// thread's own fault there.
	uint64_t at;
	int err;
	if (do_req(p, th_slot(th), q, NULL, C_AHEAD, 0, &at, &err) == PG_SRCERR) {
		int64_t skip = (int64_t)((at - q->addr) / q->psize);
		bm_clear(q->st->claimed, q->idx + skip, (int64_t)(q->len / q->psize) - skip);
		wake(p, at, q->addr + q->len - at);
	}
}

// ---------------------------------------------------------------------
// Engines.

static int mode_for(pg_engine *e) {
	return e->npagers == 1 && !e->pagers->events ? M_BLOCK : M_EPOLL;
}

static int set_nonblock(pg_pager *p, int on) {
	int fl = fcntl(p->fd, F_GETFL);
	if (fl < 0) return errno;
	if (p->saved_fl < 0) p->saved_fl = fl;
	int want = on ? fl | O_NONBLOCK : fl & ~O_NONBLOCK;
	if (want != fl && fcntl(p->fd, F_SETFL, want)) return errno;
	return 0;
}

static void restore_fl(pg_pager *p) {
	if (p->saved_fl >= 0) {
		fcntl(p->fd, F_SETFL, p->saved_fl);
		p->saved_fl = -1;
	}
}

static void stop_threads(pg_engine *e) {
	for (int i = 0; i < e->n; i++) {
		pg_thread *th = &e->th[i];
		if (!th->started) continue;
		if (th->mode == M_BLOCK) {
			pthread_cancel(th->tid);
		} else {
			__atomic_store_n(&th->quit, 1, __ATOMIC_SEQ_CST);
			uint64_t one = 1;
			ssize_t r = write(th->cfd, &one, sizeof one);
			(void)r;
		}
	}
	for (int i = 0; i < e->n; i++) {
		pg_thread *th = &e->th[i];
		if (!th->started) continue;
		pthread_join(th->tid, NULL);
		th->started = 0;
		if (th->ep >= 0) close(th->ep);
		th->ep = -1;
		th->os_tid = 0;
	}
}

static int start_threads(pg_engine *e) {
	e->mode = mode_for(e);
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old); // the threads start with every signal blocked
	int err = 0;
	for (int i = 0; i < e->n && !err; i++) {
		pg_thread *th = &e->th[i];
		th->mode = e->mode;
		th->quit = 0;
		th->only = NULL;
		void *(*fn)(void *) = epoll_main;
		if (e->mode == M_BLOCK) {
			th->only = e->pagers;
			fn = block_main;
		} else {
			th->ep = epoll_create1(EPOLL_CLOEXEC);
			if (th->ep < 0) {
				err = errno;
				break;
			}
			struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
			if (epoll_ctl(th->ep, EPOLL_CTL_ADD, th->cfd, &ev)) err = errno;
			for (pg_pager *p = e->pagers; p && !err; p = p->next) {
				struct epoll_event pe = {.events = EPOLLIN, .data.ptr = p};
				if (epoll_ctl(th->ep, EPOLL_CTL_ADD, p->fd, &pe)) err = errno;
			}
			if (err) break;
		}
		if ((err = pthread_create(&th->tid, NULL, fn, th))) break;
		th->started = 1;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	// Return once every thread is pinned and reading.
	for (int i = 0; i < e->n; i++)
		while (e->th[i].started && !__atomic_load_n(&e->th[i].os_tid, __ATOMIC_SEQ_CST)) nap_us(10);
	return err;
}

pg_engine *pg_engine_new(const int *cpus, int n, int64_t spin_ns, int *err) {
	*err = 0;
	if (n < 1) {
		*err = EINVAL;
		return NULL;
	}
	pg_engine *e = calloc(1, sizeof *e);
	if (!e) goto nomem;
	e->n = n;
	e->spin_ns = spin_ns;
	e->cpus = calloc((size_t)n, sizeof *e->cpus);
	e->th = calloc((size_t)n, sizeof *e->th);
	e->wk = calloc((size_t)n, sizeof *e->wk);
	if (!e->cpus || !e->th || !e->wk) goto nomem;
	pthread_mutex_init(&e->mu, NULL);
	memcpy(e->cpus, cpus, (size_t)n * sizeof *cpus);
	for (int i = 0; i < n; i++) {
		pg_thread *th = &e->th[i];
		th->e = e, th->idx = i, th->cpu = cpus[i], th->ep = -1;
		th->cfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (th->cfd < 0) {
			*err = errno;
			pg_engine_free(e);
			return NULL;
		}
	}
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	for (int i = 0; i < n && !*err; i++) {
		pg_worker *w = &e->wk[i];
		w->e = e, w->idx = i, w->cpu = cpus[i];
		pthread_mutex_init(&w->mu, NULL);
		pthread_cond_init(&w->cv, NULL);
		pthread_cond_init(&w->idle, NULL);
		if ((*err = pthread_create(&w->tid, NULL, worker_main, w)) == 0) w->started = 1;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	for (int i = 0; i < n; i++)
		while (e->wk[i].started && !__atomic_load_n(&e->wk[i].os_tid, __ATOMIC_SEQ_CST)) nap_us(10);
	if (!*err) *err = start_threads(e);
	if (*err) {
		pg_engine_free(e);
		return NULL;
	}
	return e;
nomem:
	if (e) {
		free(e->cpus), free(e->th), free(e->wk);
		free(e);
	}
	*err = ENOMEM;
	return NULL;
}

void pg_engine_free(pg_engine *e) {
	if (!e) return;
	stop_threads(e);
	for (int i = 0; i < e->n; i++) {
		pg_worker *w = &e->wk[i];
		if (w->started) {
			pthread_mutex_lock(&w->mu);
			w->stop = 1;
			pthread_cond_signal(&w->cv);
			pthread_mutex_unlock(&w->mu);
			pthread_join(w->tid, NULL);
		}
		free(w->q);
		if (e->th[i].cfd >= 0) close(e->th[i].cfd);
	}
	free(e->cpus), free(e->th), free(e->wk);
	free(e);
}

int pg_engine_attach(pg_engine *e, pg_pager *p) {
	pthread_mutex_lock(&e->mu);
	int old = e->mode, err = 0;
	p->next = e->pagers;
	e->pagers = p;
	e->npagers++;
	__atomic_store_n(&p->attached, 1, __ATOMIC_SEQ_CST);
	__atomic_store_n(&p->eng, e, __ATOMIC_SEQ_CST);
	// Readers are threads 0..n-1, workers n..2n-1.
	__atomic_store_n(&p->owned, 2 * e->n <= p->nslots - 1, __ATOMIC_SEQ_CST);
	int mode = mode_for(e);
	if (mode == M_BLOCK || old == M_BLOCK) {
		stop_threads(e);
		for (pg_pager *q = e->pagers; q && !err; q = q->next) err = set_nonblock(q, mode == M_EPOLL || e->spin_ns > 0);
		if (!err) err = start_threads(e);
	} else {
		err = set_nonblock(p, 1);
		for (int i = 0; i < e->n && !err; i++) {
			struct epoll_event pe = {.events = EPOLLIN, .data.ptr = p};
			if (epoll_ctl(e->th[i].ep, EPOLL_CTL_ADD, p->fd, &pe)) err = errno;
		}
	}
	pthread_mutex_unlock(&e->mu);
	if (err) pg_engine_detach(e, p);
	return err;
}

void pg_engine_detach(pg_engine *e, pg_pager *p) {
	pthread_mutex_lock(&e->mu);
	pg_pager **pp = &e->pagers;
	while (*pp && *pp != p) pp = &(*pp)->next;
	if (!*pp) {
		pthread_mutex_unlock(&e->mu);
		return;
	}
	*pp = p->next;
	p->next = NULL;
	e->npagers--;
	__atomic_store_n(&p->attached, 0, __ATOMIC_SEQ_CST);
	__atomic_store_n(&p->eng, NULL, __ATOMIC_SEQ_CST);
	int restart = e->mode == M_BLOCK || mode_for(e) == M_BLOCK;
	if (restart) {
		stop_threads(e);
	} else {
		for (int i = 0; i < e->n; i++) epoll_ctl(e->th[i].ep, EPOLL_CTL_DEL, p->fd, NULL);
		// Wait until no reader is inside a batch that may hold p: a
		// reader marks its batch (seq odd) before it checks p->attached.
		for (int i = 0; i < e->n; i++) {
			uint64_t s = __atomic_load_n(&e->th[i].seq, __ATOMIC_SEQ_CST);
			if (s & 1)
				while (__atomic_load_n(&e->th[i].seq, __ATOMIC_SEQ_CST) == s) nap_us(20);
		}
	}
	// Background installs of p: drop those not started (releasing their
	// pages) and wait for those running.
	for (int i = 0; i < e->n; i++) {
		pg_worker *w = &e->wk[i];
		pthread_mutex_lock(&w->mu);
		int k = 0;
		for (int j = 0; j < w->n; j++) {
			if (w->q[j].p != p) {
				w->q[k++] = w->q[j];
				continue;
			}
			pg_req *q = &w->q[j].q;
			bm_clear(q->st->claimed, q->idx, (int64_t)(q->len / q->psize));
			wake(p, q->addr, q->len);
		}
		w->n = k;
		while (w->cur == p) pthread_cond_wait(&w->idle, &w->mu);
		__atomic_store_n(&w->busy, w->n > 0 || w->cur, __ATOMIC_RELAXED);
		pthread_mutex_unlock(&w->mu);
	}
	restore_fl(p);
	if (restart) {
		for (pg_pager *q = e->pagers; q; q = q->next) set_nonblock(q, mode_for(e) == M_EPOLL || e->spin_ns > 0);
		start_threads(e);
	}
	pthread_mutex_unlock(&e->mu);
}

int pg_engine_threads(pg_engine *e, int *tids, int cap) {
	int n = 0;
	pthread_mutex_lock(&e->mu);
	for (int i = 0; i < e->n; i++) {
		if (n < cap) tids[n] = __atomic_load_n(&e->th[i].os_tid, __ATOMIC_SEQ_CST);
		n++;
		if (n < cap) tids[n] = __atomic_load_n(&e->wk[i].os_tid, __ATOMIC_SEQ_CST);
		n++;
	}
	pthread_mutex_unlock(&e->mu);
	return n;
}

// ---------------------------------------------------------------------
// Pagers: what Go calls.

pg_pager *pg_new(int fd, int nfd, int events, int poison, int64_t pf_min, int64_t pf_max, int adaptive, int trace) {
	pg_pager *p = calloc(1, sizeof *p);
	if (!p) return NULL;
	long cpus = sysconf(_SC_NPROCESSORS_CONF);
	// A reader and a worker per CPU, and the shared slot.
	p->nslots = 1 + (int)(cpus < 1 ? 2 : cpus > 16 ? 32 : 2 * cpus);
	p->slots = aligned_alloc(64, (size_t)p->nslots * sizeof *p->slots);
	p->layout = layout_new(0);
	if (!p->layout || !p->slots) {
		free(p->layout);
		free(p->slots);
		free(p);
		return NULL;
	}
	memset(p->slots, 0, (size_t)p->nslots * sizeof *p->slots);
	p->fd = fd, p->nfd = nfd;
	p->events = events, p->poison = poison;
	p->pf_min = pf_min, p->pf_max = pf_max, p->adaptive = adaptive, p->trace_on = trace;
	p->saved_fl = -1;
	p->fork_fd = -1;
	pthread_rwlockattr_t a;
	pthread_rwlockattr_init(&a);
	// A reader waiting to read events must not starve behind installs.
	pthread_rwlockattr_setkind_np(&a, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	for (int i = 0; i < p->nslots; i++) pthread_rwlock_init(&p->slots[i].lock, &a);
	pthread_rwlockattr_destroy(&a);
	pthread_mutex_init(&p->smu, NULL);
	pthread_mutex_init(&p->qmu, NULL);
	pthread_mutex_init(&p->dmu, NULL);
	return p;
}

static void free_forks(pg_pager *p) {
	for (pg_pager *c = p->forks, *n; c; c = n) {
		n = c->fork_next;
		close(c->fd);
		pg_free(c);
	}
	p->forks = NULL;
}

void pg_free(pg_pager *p) {
	if (!p) return;
	free_forks(p);
	for (pg_state *s = p->states, *n; s; s = n) {
		n = s->next;
		free(s->claimed), free(s->done), free(s->zero);
		free(s);
	}
	if (p->zhuge) munmap(p->zhuge, p->zhuge_len);
	free(p->layout);
	free(p->reqs);
	free(p->trace);
	free(p->def);
	for (int i = 0; i < p->nslots; i++) pthread_rwlock_destroy(&p->slots[i].lock);
	free(p->slots);
	pthread_mutex_destroy(&p->smu);
	pthread_mutex_destroy(&p->qmu);
	pthread_mutex_destroy(&p->dmu);
	free(p);
}

static pg_state *state_new(pg_pager *p, int64_t pages) {
	pg_state *s = calloc(1, sizeof *s);
	if (!s) return NULL;
	s->pages = pages;
	s->claimed = bm_new(pages), s->done = bm_new(pages), s->zero = bm_new(pages);
	if (!s->claimed || !s->done || !s->zero) {
		free(s->claimed), free(s->done), free(s->zero);
		free(s);
		return NULL;
	}
	s->next = p->states;
	p->states = s;
	return s;
}

static int zero_huge(pg_pager *p, uint64_t psize) {
	if (psize <= p->zhuge_len) return 0;
	char *z = mmap(NULL, psize, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (z == MAP_FAILED) return errno;
	if (p->zhuge) munmap(p->zhuge, p->zhuge_len);
	p->zhuge = z, p->zhuge_len = psize;
	return 0;
}

static void retry_strays(pg_pager *p) {
	pthread_mutex_lock(&p->dmu);
	int n = p->nstray;
	pg_stray s[PG_STRAYS];
	memcpy(s, p->stray, (size_t)n * sizeof s[0]);
	p->nstray = 0;
	pthread_mutex_unlock(&p->dmu);
	for (int i = 0; i < n; i++) {
		rd_lock(p, -1);
		int in = lookup(p->layout, s[i].addr) != NULL;
		rd_unlock(p, -1);
		if (in) {
			fault(NULL, p, s[i].addr, s[i].t0);
			continue;
		}
		pthread_mutex_lock(&p->dmu);
		if (p->nstray < PG_STRAYS) p->stray[p->nstray++] = s[i];
		pthread_mutex_unlock(&p->dmu);
	}
}

int pg_add(pg_pager *p, const pg_desc *d) {
	pg_region r;
	memset(&r, 0, sizeof r);
	r.start = d->start, r.len = d->len, r.psize = d->psize;
	r.pages = (int64_t)(d->len / d->psize);
	r.off = d->off;
	r.id = d->id, r.src = d->src, r.policy = d->policy;
	r.huge = d->psize > (uint64_t)sysconf(_SC_PAGESIZE);
	while ((1ull << r.shift) < d->psize) r.shift++;
	r.data = d->data;
	r.chunk_shift = d->chunk_shift;
	r.present = d->present, r.czero = d->czero, r.pins = d->pins;
	wr_lock(p);
	int err = r.huge ? zero_huge(p, r.psize) : 0;
	pg_layout *l = err ? NULL : layout_new(p->layout->n + 1);
	if (!err && l) r.st = state_new(p, r.pages);
	if (!err && (!l || !r.st)) err = ENOMEM;
	if (err) {
		free(l);
		wr_unlock(p);
		return err;
	}
	memcpy(l->r, p->layout->r, (size_t)p->layout->n * sizeof r);
	l->n = p->layout->n;
	l->r[l->n++] = r;
	replace(p, l, 0);
	wr_unlock(p);
	if (__atomic_load_n(&p->nstray, __ATOMIC_SEQ_CST)) retry_strays(p);
	return 0;
}

// fork_pager returns a pager for a FORK event's userfaultfd: the parent's
// regions, with the pages resolved so far marked resolved (the child
// inherited them). The caller holds the pager's lock exclusively.
static pg_pager *fork_pager(pg_pager *p, int fd) {
	pg_pager *c = pg_new(fd, -1, p->events, p->poison, p->pf_min, p->pf_max, p->adaptive, p->trace_on);
	if (!c) return NULL;
	const pg_layout *l = p->layout;
	pg_layout *cl = layout_new(l->n);
	if (!cl || (p->zhuge_len && zero_huge(c, p->zhuge_len))) {
		free(cl);
		pg_free(c);
		return NULL;
	}
	free(c->layout);
	c->layout = cl;
	for (int i = 0; i < l->n; i++) {
		pg_region r = l->r[i];
		pg_state *s = NULL;
		for (int j = 0; j < i; j++)
			if (l->r[j].st == r.st) s = cl->r[j].st;
		if (!s) {
			s = calloc(1, sizeof *s);
			if (s) {
				s->pages = r.st->pages;
				s->claimed = bm_clone(r.st->done, s->pages);
				s->done = bm_clone(r.st->done, s->pages);
				s->zero = bm_clone(r.st->zero, s->pages);
				s->next = c->states;
				c->states = s;
			}
			if (!s || !s->claimed || !s->done || !s->zero) {
				pg_free(c);
				return NULL;
			}
		}
		r.st = s;
		cl->r[cl->n++] = r;
	}
	c->fork_fd = fd;
	return c;
}

pg_pager *pg_take_fork(pg_pager *p, int *fd) {
	pthread_mutex_lock(&p->qmu);
	pg_pager *c = p->forks;
	if (c) p->forks = c->fork_next, c->fork_next = NULL;
	pthread_mutex_unlock(&p->qmu);
	*fd = c ? c->fork_fd : -1;
	return c;
}

void pg_set_fds(pg_pager *p, int fd, int nfd) { p->fd = fd, p->nfd = nfd; }

int pg_take_reqs(pg_pager *p, pg_req *out, int cap) {
	pthread_mutex_lock(&p->qmu);
	int n = p->nreq < cap ? p->nreq : cap;
	memcpy(out, p->reqs, (size_t)n * sizeof *out);
	memmove(p->reqs, p->reqs + n, (size_t)(p->nreq - n) * sizeof *out);
	p->nreq -= n;
	pthread_mutex_unlock(&p->qmu);
	return n;
}

int pg_take_errs(pg_pager *p, pg_err *out, int cap, uint64_t *dropped) {
	pthread_mutex_lock(&p->qmu);
	int n = p->nerrs < cap ? p->nerrs : cap;
	memcpy(out, p->errs, (size_t)n * sizeof *out);
	memmove(p->errs, p->errs + n, (size_t)(p->nerrs - n) * sizeof *out);
	p->nerrs -= n;
	*dropped = p->dropped;
	p->dropped = 0;
	pthread_mutex_unlock(&p->qmu);
	return n;
}

int pg_take_trace(pg_pager *p, uint64_t *out, int cap) {
	pthread_mutex_lock(&p->qmu);
	int n = p->ntrace < cap ? p->ntrace : cap;
	memcpy(out, p->trace, (size_t)n * sizeof *out);
	memmove(p->trace, p->trace + n, (size_t)(p->ntrace - n) * sizeof *out);
	p->ntrace -= n;
	pthread_mutex_unlock(&p->qmu);
	return n;
}

int pg_status(pg_pager *p, int *err) {
	pthread_mutex_lock(&p->qmu);
	int s = p->status;
	*err = p->fatal;
	pthread_mutex_unlock(&p->qmu);
	return s;
}

void pg_counters_read(pg_pager *p, pg_counters *out) {
	uint64_t *dst = (uint64_t *)out;
	memset(out, 0, sizeof *out);
	for (int s = 0; s < p->nslots; s++) {
		const uint64_t *src = (const uint64_t *)&p->slots[s].c;
		for (size_t i = 0; i < sizeof *out / sizeof(uint64_t); i++) dst[i] += __atomic_load_n(&src[i], __ATOMIC_RELAXED);
	}
}

int64_t pg_pending(pg_pager *p) {
	int64_t n = 0;
	for (int s = 0; s < p->nslots; s++) n += __atomic_load_n(&p->slots[s].pending, __ATOMIC_SEQ_CST);
	return n;
}

// go_installs_begin and go_installs_end bracket installs made from Go's
// threads (Resolve, the fill, a prefault or replay, a source's bytes):
// meanwhile, and for PG_GO_QUIET_NS after, the engine's readers do not
// spin, since Go's threads need the CPUs.
static pg_engine *go_installs_begin(pg_pager *p) {
	pg_engine *e = __atomic_load_n(&p->eng, __ATOMIC_SEQ_CST);
	if (e) __atomic_fetch_add(&e->go_installs, 1, __ATOMIC_SEQ_CST);
	return e;
}

static void go_installs_end(pg_engine *e) {
	if (!e) return;
	__atomic_store_n(&e->go_last, now_ns(), __ATOMIC_RELAXED);
	__atomic_fetch_sub(&e->go_installs, 1, __ATOMIC_SEQ_CST);
}

int pg_install_req(pg_pager *p, const pg_req *q, const char *buf, uint64_t *at) {
	int err = 0;
	rd_lock(p, -1);
	pg_engine *e = go_installs_begin(p);
	int out = do_req(p, -1, q, buf, q->fault ? C_FAULT : q->t0 ? C_AHEAD : C_FILL, 0, at, &err);
	go_installs_end(e);
	rd_unlock(p, -1);
	return out;
}

void pg_unclaim_req(pg_pager *p, const pg_req *q) {
	rd_lock(p, -1);
	bm_clear(q->st->claimed, q->idx, (int64_t)(q->len / q->psize));
	rd_unlock(p, -1);
}

void pg_release_req(pg_pager *p, const pg_req *q) {
	rd_lock(p, -1);
	bm_clear(q->st->claimed, q->idx, (int64_t)(q->len / q->psize));
	rd_unlock(p, -1);
	wake(p, q->addr, q->len);
}

// pg_poison_req answers the request's faulting page with SIGBUS
// (UFFDIO_POISON) and releases the rest. It returns 0 or an errno.
int pg_poison_req(pg_pager *p, const pg_req *q) {
	if (!q->fault) {
		pg_release_req(p, q);
		return 0;
	}
	rd_lock(p, -1);
	const pg_region *r;
	int err = 0;
	if (validate_req(p, q, &r)) {
		int64_t f = (int64_t)((q->fault - r->start) >> r->shift);
		struct uffdio_poison ps = {.range = {.start = q->fault, .len = q->psize}};
		while (ioctl(p->fd, UFFDIO_POISON, &ps) && (err = errno) == EINTR) err = 0;
		if (!err || err == EEXIST) {
			bm_set(r->st->done, r->base + f, 1);
			CADD(p, -1, poisoned, 1);
			int64_t lo = (int64_t)((q->addr - r->start) >> r->shift), n = (int64_t)(q->len / q->psize);
			if (f > lo) bm_clear(r->st->claimed, r->base + lo, f - lo);
			if (lo + n > f + 1) bm_clear(r->st->claimed, r->base + f + 1, lo + n - f - 1);
			rd_unlock(p, -1);
			if (f > lo) wake(p, q->addr, q->fault - q->addr);
			if (q->addr + q->len > q->fault + q->psize) wake(p, q->fault + q->psize, q->addr + q->len - q->fault - q->psize);
			return 0;
		}
	}
	rd_unlock(p, -1);
	pg_release_req(p, q);
	return err;
}

void pg_count(pg_pager *p, uint64_t retries, uint64_t source_errors) {
	CADD(p, -1, retries, retries);
	CADD(p, -1, source_errors, source_errors);
}

int pg_resolve(pg_pager *p, uint64_t *addr, uint64_t end, uint64_t chunk, pg_req *q) {
	rd_lock(p, -1);
	pg_engine *e = go_installs_begin(p);
	int out = PG_OK;
	while (*addr < end) {
		const pg_layout *l = p->layout;
		const pg_region *r = lookup(l, *addr);
		if (!r) {
			uint64_t next = end;
			for (int i = 0; i < l->n; i++)
				if (l->r[i].start > *addr && l->r[i].start < next) next = l->r[i].start;
			*addr = next;
			continue;
		}
		int64_t i = (int64_t)((*addr - r->start) >> r->shift);
		int64_t stop = r->pages;
		if (end < rend(r)) stop = (int64_t)((end - r->start + r->psize - 1) >> r->shift);
		int64_t skip = bm_run(r->st->claimed, r->base + i, stop - i, 1);
		if (skip) {
			*addr = page_addr(r, i + skip);
			continue;
		}
		int64_t want = (int64_t)(chunk >> r->shift);
		if (want < 1) want = 1;
		if (want > stop - i) want = stop - i;
		int64_t n = bm_claim(r->st->claimed, r->base + i, want);
		if (!n) continue;
		inst in = {.p = p, .r = r, .f = -1, .count = C_FILL, .piece = (int64_t)(PG_PIECE >> r->shift), .slot = -1};
		int64_t at = i + n;
		out = install(&in, i, i + n, &at);
		*addr = page_addr(r, i + n);
		if (out == PG_OK || out == PG_NOMAP) {
			out = PG_OK;
			continue;
		}
		if (out == PG_NEED || out == PG_SRCERR) {
			fill_req(q, r, out == PG_SRCERR ? PG_REQ_RETRY : r->src == PG_SRC_CACHE ? PG_REQ_FETCH : PG_REQ_READ, at, i + n, -1, 0, 0);
			q->err = in.err;
		} else {
			*addr = page_addr(r, at);
			q->err = in.err;
			if (out == PG_GONE) set_status(p, PG_ST_GONE, 0);
		}
		break;
	}
	go_installs_end(e);
	rd_unlock(p, -1);
	return out;
}

// The liveness probe: a resolving ioctl answers ESRCH once the process's
// memory is gone, whatever the range. UFFDIO_COPY from a page of ours that
// cannot be read (PROT_NONE) can never install anything: where the other
// process has nothing mapped it answers ENOENT, where it has a registered
// hole the copy from our page fails (EFAULT).
static char *guard;
static pthread_once_t guard_once = PTHREAD_ONCE_INIT;

static void guard_init(void) {
	void *g = mmap(NULL, (size_t)sysconf(_SC_PAGESIZE), PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (g != MAP_FAILED) guard = g;
}

int pg_probe(pg_pager *p) {
	pthread_once(&guard_once, guard_init);
	if (!guard) return ENOMEM;
	uint64_t ps = (uint64_t)sysconf(_SC_PAGESIZE);
	struct uffdio_copy c = {.dst = (uint64_t)(uintptr_t)guard, .src = (uint64_t)(uintptr_t)guard, .len = ps, .mode = UFFDIO_COPY_MODE_DONTWAKE};
	if (ioctl(p->fd, UFFDIO_COPY, &c) == 0) return 0;
	return errno;
}

int pg_resolved(pg_pager *p, uint64_t addr) {
	rd_lock(p, -1);
	const pg_region *r = lookup(p->layout, addr);
	int v = r ? bm_get(r->st->done, r->base + (int64_t)((addr - r->start) >> r->shift)) : 0;
	rd_unlock(p, -1);
	return v;
}

int pg_spans(pg_pager *p, pg_span *out, int cap) {
	rd_lock(p, -1);
	int n = p->layout->n;
	for (int i = 0; i < n && i < cap; i++) {
		const pg_region *r = &p->layout->r[i];
		out[i].start = r->start, out[i].len = r->len, out[i].off = r->off, out[i].id = r->id, out[i].pad = 0;
	}
	rd_unlock(p, -1);
	return n;
}

int pg_removed(pg_pager *p, uint64_t *out, int cap) {
	int n = 0;
	rd_lock(p, -1);
	const pg_layout *l = p->layout;
	for (int k = 0; k < l->n; k++) {
		const pg_region *r = &l->r[k];
		for (int64_t i = 0; i < r->pages;) {
			int64_t run = bm_run(r->st->zero, r->base + i, r->pages - i, 0);
			if (run) {
				i += run;
				continue;
			}
			run = bm_run(r->st->zero, r->base + i, r->pages - i, 1);
			uint64_t a = page_addr(r, i), b = page_addr(r, i + run);
			if (n > 0 && 2 * n <= cap && out[2 * n - 1] == a) {
				out[2 * n - 1] = b;
			} else {
				if (2 * n + 1 < cap) out[2 * n] = a, out[2 * n + 1] = b;
				n++;
			}
			i += run;
		}
	}
	rd_unlock(p, -1);
	return n;
}

void pg_mark_removed(pg_pager *p, uint64_t start, uint64_t end) {
	wr_lock(p);
	removed(p, start, end);
	wr_unlock(p);
}

// pg_release_all lets every fault kept here fault again (after Serve
// ends): deferred ones and those in no region.
void pg_release_all(pg_pager *p) {
	uint64_t ps = (uint64_t)sysconf(_SC_PAGESIZE);
	pthread_mutex_lock(&p->dmu);
	for (int i = 0; i < p->ndef; i++) wake(p, p->def[i].addr & ~(ps - 1), ps);
	for (int i = 0; i < p->nstray; i++) wake(p, p->stray[i].addr, ps);
	p->ndef = 0, p->nstray = 0;
	pthread_mutex_unlock(&p->dmu);
}
