//go:build cgo && linux

// Write-protect faults for live snapshots: see snap.h, and package
// snapshot's documentation for the argument that the copy is consistent.

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>
#include <linux/userfaultfd.h>

#include "snap.h"

#define PS_MAXR 64 // ranges of one snapshot

static inline uint64_t ps_now(void) {
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

static inline void ps_add64(uint64_t *c, uint64_t n) {
	if (n) __atomic_fetch_add(c, n, __ATOMIC_RELAXED);
}

static inline void ps_max64(uint64_t *c, uint64_t v) {
	uint64_t o = __atomic_load_n(c, __ATOMIC_RELAXED);
	while (v > o && !__atomic_compare_exchange_n(c, &o, v, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
	}
}

// Page bitmaps, every word accessed atomically.
static inline int b_get(const uint64_t *b, int64_t i) {
	return (int)((__atomic_load_n(&b[i >> 6], __ATOMIC_SEQ_CST) >> (i & 63)) & 1);
}
static inline void b_set(uint64_t *b, int64_t i) { __atomic_fetch_or(&b[i >> 6], 1ull << (i & 63), __ATOMIC_SEQ_CST); }
static inline void b_clr(uint64_t *b, int64_t i) { __atomic_fetch_and(&b[i >> 6], ~(1ull << (i & 63)), __ATOMIC_SEQ_CST); }
// b_tas sets bit i and reports whether it was clear.
static inline int b_tas(uint64_t *b, int64_t i) {
	uint64_t m = 1ull << (i & 63);
	return !(__atomic_fetch_or(&b[i >> 6], m, __ATOMIC_SEQ_CST) & m);
}

typedef struct {
	uint64_t start, len, psize, off; // off: the image offset of start
	int shift;
	int64_t pages, words;
	uint64_t *pending; // to save in this snapshot, not saved yet
	uint64_t *claim;   // being saved
	uint64_t *dirty;   // written since the last re-protect (tracking)
	uint64_t *epoch;   // written since the last snapshot's instant
	uint64_t *layer;   // saved by this snapshot
	uint64_t *parked;  // a fault there waits for free slots
} ps_range;

typedef struct {
	uint64_t addr, t0;
} ps_wait;

typedef struct {
	ps_wait *v;
	int n, cap;
} ps_waits;

struct pg_snap {
	int fd, pid, nfd;
	uint64_t unit; // slot size: the base page size
	int nr;
	ps_range r[PS_MAXR];

	// Handlers share mlock from reading the mode to their answer; mode
	// changes take it exclusively, so that none is in flight across one.
	pthread_rwlock_t mlock;
	int mode, track;
	uint64_t block; // bytes a fault saves around its page, at most
	int64_t npending;

	// The slots: a bounded buffer of copied pages.
	pthread_mutex_t bmu;
	pthread_cond_t bcv; // slots freed
	char *buf;
	uint64_t buf_len;
	int64_t nslots, used, hint;
	uint64_t *busy;

	// Saved runs waiting to be written out, oldest first.
	pthread_mutex_t qmu;
	pthread_cond_t qcv;
	ps_entry *q;
	int64_t qh, qn, qcap;

	// Faults kept: held (PS_HOLD) and parked (no free slot).
	pthread_mutex_t wmu;
	ps_waits held, parked;

	// The background pass.
	int cur_r;
	int64_t cur_i;

	// The drain thread, writing to a file.
	pthread_t drainer;
	int drain_on, drain_stop, drain_busy, out_fd, direct;
	int err; // first error (errno): copy or destination

	ps_counters c;
};

static void ps_notify(pg_snap *s) {
	if (s->nfd < 0) return;
	uint64_t one = 1;
	ssize_t r = write(s->nfd, &one, sizeof one);
	(void)r;
}

static void set_err(pg_snap *s, int err) {
	int zero = 0;
	if (__atomic_compare_exchange_n(&s->err, &zero, err, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) ps_notify(s);
}

static int wp(pg_snap *s, uint64_t start, uint64_t len, int on) {
	if (!len) return 0;
	struct uffdio_writeprotect w = {.range = {.start = start, .len = len}, .mode = on ? UFFDIO_WRITEPROTECT_MODE_WP : 0};
	ps_add64(&s->c.protect_ioctls, 1);
	for (;;) {
		if (ioctl(s->fd, UFFDIO_WRITEPROTECT, &w) == 0) return 0;
		if (errno == EINTR || errno == EAGAIN) continue; // an event is being read: try again
		return errno;
	}
}

static ps_range *find(pg_snap *s, uint64_t addr) {
	for (int k = 0; k < s->nr; k++)
		if (addr >= s->r[k].start && addr < s->r[k].start + s->r[k].len) return &s->r[k];
	return NULL;
}

static inline uint64_t paddr(const ps_range *r, int64_t i) { return r->start + ((uint64_t)i << r->shift); }

// copy_in reads len bytes at addr of the snapshotted process into dst.
static int copy_in(pg_snap *s, uint64_t addr, char *dst, uint64_t len) {
	if (s->pid <= 0) {
		memcpy(dst, (const void *)(uintptr_t)addr, len);
		return 0;
	}
	while (len) {
		struct iovec l = {.iov_base = dst, .iov_len = len}, r = {.iov_base = (void *)(uintptr_t)addr, .iov_len = len};
		ssize_t n = process_vm_readv(s->pid, &l, 1, &r, 1, 0);
		if (n < 0) {
			if (errno == EINTR) continue;
			return errno;
		}
		if (n == 0) return EFAULT;
		dst += n, addr += (uint64_t)n, len -= (uint64_t)n;
	}
	return 0;
}

static int is_zero(const char *p, uint64_t n) {
	const uint64_t *w = (const uint64_t *)p;
	for (uint64_t i = 0; i < n / 8; i++)
		if (w[i]) return 0;
	return 1;
}

// ---------------------------------------------------------------------
// Slots.

// slots_get takes n contiguous free slots, or returns -1. keep: leave that
// many free (the background pass leaves room for faults).
static int64_t slots_get(pg_snap *s, int64_t n, int64_t keep) {
	pthread_mutex_lock(&s->bmu);
	int64_t got = -1;
	if (s->nslots - s->used - keep >= n) {
		for (int64_t pass = 0; pass < 2 && got < 0; pass++) {
			int64_t i = pass ? 0 : s->hint, end = pass ? s->hint + n : s->nslots;
			if (end > s->nslots) end = s->nslots;
			int64_t run = 0;
			while (i < end) {
				if ((i & 63) == 0 && s->busy[i >> 6] == ~0ull) {
					run = 0, i += 64;
					continue;
				}
				if ((s->busy[i >> 6] >> (i & 63)) & 1) {
					run = 0;
				} else if (++run == n) {
					got = i + 1 - n;
					break;
				}
				i++;
			}
		}
	}
	if (got >= 0) {
		for (int64_t j = got; j < got + n; j++) s->busy[j >> 6] |= 1ull << (j & 63);
		s->used += n;
		s->hint = got + n < s->nslots ? got + n : 0;
		ps_max64(&s->c.slots_peak, (uint64_t)s->used);
	}
	pthread_mutex_unlock(&s->bmu);
	return got;
}

static void slots_put(pg_snap *s, int64_t slot, int64_t n) {
	if (n <= 0) return;
	pthread_mutex_lock(&s->bmu);
	for (int64_t j = slot; j < slot + n; j++) s->busy[j >> 6] &= ~(1ull << (j & 63));
	s->used -= n;
	pthread_cond_broadcast(&s->bcv);
	pthread_mutex_unlock(&s->bmu);
}

static void push_entry(pg_snap *s, const ps_entry *e) {
	pthread_mutex_lock(&s->qmu);
	// Every entry holds a slot at least, so nslots entries always fit.
	s->q[(s->qh + s->qn) % s->qcap] = *e;
	int first = s->qn++ == 0;
	pthread_cond_signal(&s->qcv);
	pthread_mutex_unlock(&s->qmu);
	if (first && !s->drain_on) ps_notify(s);
}

// queue_run hands pages [i, i+n) of r, copied into the slots from slot,
// to be written out; all-zero pages are dropped (holes in the image).
static void queue_run(pg_snap *s, ps_range *r, int64_t i, int64_t n, int64_t slot, uint32_t flags) {
	int64_t per = (int64_t)(r->psize / s->unit);
	int64_t j = 0;
	while (j < n) {
		const char *pg = s->buf + (uint64_t)(slot + j * per) * s->unit;
		if (is_zero(pg, r->psize)) {
			ps_add64(&s->c.zero_pages, 1);
			slots_put(s, slot + j * per, per);
			j++;
			continue;
		}
		int64_t k = j + 1;
		while (k < n && !is_zero(s->buf + (uint64_t)(slot + k * per) * s->unit, r->psize)) k++;
		ps_entry e = {.addr = paddr(r, i + j), .len = (uint64_t)(k - j) << r->shift, .off = r->off + ((uint64_t)(i + j) << r->shift), .slot = slot + j * per, .flags = flags};
		push_entry(s, &e);
		j = k;
	}
}

static void waits_push(pg_snap *s, ps_waits *w, uint64_t addr, uint64_t t0) {
	pthread_mutex_lock(&s->wmu);
	if (w->n == w->cap) {
		int cap = w->cap ? 2 * w->cap : 64;
		ps_wait *v = realloc(w->v, (size_t)cap * sizeof *v);
		if (v) w->v = v, w->cap = cap;
	}
	if (w->n < w->cap) {
		w->v[w->n].addr = addr, w->v[w->n].t0 = t0;
		w->n++;
		pthread_mutex_unlock(&s->wmu);
		return;
	}
	pthread_mutex_unlock(&s->wmu);
	// No memory to remember it: the thread stays blocked until the next
	// unprotect of its page. Record it as the error it is.
	set_err(s, ENOMEM);
}

static ps_wait *waits_take(pg_snap *s, ps_waits *w, int *n) {
	pthread_mutex_lock(&s->wmu);
	ps_wait *v = w->v;
	*n = w->n;
	w->v = NULL, w->n = 0, w->cap = 0;
	pthread_mutex_unlock(&s->wmu);
	return v;
}

// ---------------------------------------------------------------------
// Saving a page.

enum { R_DONE, R_PARK };

// save_block saves the pages still to save around page i of r (within
// its aligned block of s->block bytes), page i first, then answers the
// fault: unprotecting page i alone when tracking (the rest stay
// protected, so that their writes are seen), else the whole run. The
// caller holds mlock (shared) in PS_SAVE.
static int save_fault(pg_snap *s, ps_range *r, int64_t i, uint64_t t0) {
	for (;;) {
		if (!b_get(r->pending, i)) {
			// Saved already, or not part of this snapshot: a write to
			// track, or a message for a fault answered meanwhile.
			int err = wp(s, paddr(r, i), r->psize, 0);
			if (err) set_err(s, err);
			if (s->track) b_set(r->dirty, i);
			ps_add64(&s->c.late, 1);
			return R_DONE;
		}
		if (b_tas(r->claim, i)) break;
		// Another thread copies it now (never for long: claims are only
		// held by C code copying memory). Wait and look again.
		sched_yield();
	}
	if (!b_get(r->pending, i)) { // saved between our look and our claim
		b_clr(r->claim, i);
		return save_fault(s, r, i, t0);
	}
	int64_t bp = (int64_t)(s->block >> r->shift);
	if (bp < 1) bp = 1;
	int64_t b0 = i - i % bp, b1 = b0 + bp < r->pages ? b0 + bp : r->pages;
	int64_t lo = i, hi = i + 1;
	while (hi < b1 && b_get(r->pending, hi) && b_tas(r->claim, hi)) {
		if (!b_get(r->pending, hi)) {
			b_clr(r->claim, hi);
			break;
		}
		hi++;
	}
	while (lo > b0 && b_get(r->pending, lo - 1) && b_tas(r->claim, lo - 1)) {
		if (!b_get(r->pending, lo - 1)) {
			b_clr(r->claim, lo - 1);
			break;
		}
		lo--;
	}
	int64_t per = (int64_t)(r->psize / s->unit);
	int64_t slot = slots_get(s, (hi - lo) * per, 0);
	if (slot < 0) {
		// Not enough room for the block: the page alone.
		for (int64_t j = lo; j < hi; j++)
			if (j != i) b_clr(r->claim, j);
		lo = i, hi = i + 1;
		slot = slots_get(s, per, 0);
	}
	if (slot < 0) {
		b_clr(r->claim, i);
		return R_PARK;
	}
	uint64_t a = paddr(r, lo), len = (uint64_t)(hi - lo) << r->shift;
	int err = copy_in(s, a, s->buf + (uint64_t)slot * s->unit, len);
	if (err) {
		set_err(s, err);
		slots_put(s, slot, (hi - lo) * per);
		for (int64_t j = lo; j < hi; j++) b_clr(r->claim, j);
		wp(s, paddr(r, i), r->psize, 0); // release the writer: the snapshot has failed
		return R_DONE;
	}
	if (s->track) {
		err = wp(s, paddr(r, i), r->psize, 0);
		b_set(r->dirty, i);
	} else {
		err = wp(s, a, len, 0);
	}
	if (err) set_err(s, err);
	queue_run(s, r, lo, hi - lo, slot, PS_E_FAULT);
	for (int64_t j = lo; j < hi; j++) b_clr(r->pending, j);
	__atomic_fetch_sub(&s->npending, hi - lo, __ATOMIC_SEQ_CST);
	for (int64_t j = lo; j < hi; j++) b_clr(r->claim, j);
	ps_add64(&s->c.cow_faults, 1);
	ps_add64(&s->c.cow_pages, (uint64_t)(hi - lo));
	return R_DONE;
}

// handle answers one write-protect fault according to the mode. It
// returns R_PARK when the fault must wait for free slots.
static int handle(pg_snap *s, uint64_t addr, uint64_t t0, int *held) {
	int out = R_DONE;
	*held = 0;
	pthread_rwlock_rdlock(&s->mlock);
	ps_range *r = find(s, addr);
	if (!r) {
		// Not ours: let it write.
		uint64_t ps = s->unit;
		int err = wp(s, addr & ~(ps - 1), ps, 0);
		(void)err;
		pthread_rwlock_unlock(&s->mlock);
		return R_DONE;
	}
	int64_t i = (int64_t)((addr - r->start) >> r->shift);
	switch (s->mode) {
	case PS_OFF: {
		int err = wp(s, paddr(r, i), r->psize, 0);
		(void)err;
		break;
	}
	case PS_TRACK: {
		// Unprotect first, then mark: a re-protect that took the dirty
		// bits before our mark leaves the page dirty for its next round.
		int err = wp(s, paddr(r, i), r->psize, 0);
		if (err) set_err(s, err);
		b_set(r->dirty, i);
		ps_add64(&s->c.tracked, 1);
		break;
	}
	case PS_HOLD:
		// Kept under mlock, so that ps_begin_save, which changes the
		// mode exclusively before it takes the held faults, finds it.
		*held = 1;
		waits_push(s, &s->held, addr, t0);
		break;
	case PS_SAVE:
		out = save_fault(s, r, i, t0);
		// One entry per page: a thread interrupted by a signal faults
		// again (Go preempts running goroutines every 10 ms), and its
		// repeats need no entry of their own: the page's answer wakes
		// every thread waiting there.
		if (out == R_PARK && b_tas(r->parked, i)) waits_push(s, &s->parked, addr, t0);
		break;
	}
	pthread_rwlock_unlock(&s->mlock);
	return out;
}

static void retry_parked(pg_snap *s);

void ps_fault(pg_snap *s, uint64_t addr, uint64_t t0) {
	ps_add64(&s->c.wp_faults, 1);
	int held;
	int out = handle(s, addr, t0, &held);
	if (held) {
		ps_add64(&s->c.held, 1);
		return;
	}
	if (out == R_PARK) {
		ps_add64(&s->c.parked, 1);
		// Slots may have been freed between our try and the push.
		pthread_mutex_lock(&s->bmu);
		int room = s->used < s->nslots;
		pthread_mutex_unlock(&s->bmu);
		if (room) retry_parked(s);
	}
}

// answer_waits answers kept faults as the mode now says.
static void answer_waits(pg_snap *s, ps_wait *v, int n, uint64_t *maxc) {
	for (int k = 0; k < n; k++) {
		int held;
		int out = handle(s, v[k].addr, v[k].t0, &held);
		if (!held && out != R_PARK && maxc) {
			ps_max64(maxc, ps_now() - v[k].t0);
		}
	}
}

static void retry_parked(pg_snap *s) {
	int n;
	ps_wait *v = waits_take(s, &s->parked, &n);
	if (!v) return;
	for (int k = 0; k < n; k++) {
		ps_range *r = find(s, v[k].addr);
		if (r) b_clr(r->parked, (int64_t)((v[k].addr - r->start) >> r->shift));
	}
	answer_waits(s, v, n, &s->c.park_ns_max);
	free(v);
}

// ---------------------------------------------------------------------
// What Go calls.

pg_snap *ps_new(int fd, int pid, int nfd, uint64_t slots_bytes, uint64_t block, int *err) {
	*err = 0;
	pg_snap *s = calloc(1, sizeof *s);
	if (!s) {
		*err = ENOMEM;
		return NULL;
	}
	s->fd = fd, s->pid = pid, s->nfd = nfd, s->out_fd = -1;
	s->unit = (uint64_t)sysconf(_SC_PAGESIZE);
	s->block = block;
	s->nslots = (int64_t)(slots_bytes / s->unit);
	if (s->nslots < 1) s->nslots = 1;
	s->buf_len = (uint64_t)s->nslots * s->unit;
	s->buf = mmap(NULL, s->buf_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	s->busy = calloc((size_t)(s->nslots + 63) / 64 + 1, sizeof(uint64_t));
	s->qcap = s->nslots + 1;
	s->q = calloc((size_t)s->qcap, sizeof *s->q);
	if (s->buf == MAP_FAILED || !s->busy || !s->q) {
		if (s->buf == MAP_FAILED) s->buf = NULL;
		ps_free(s);
		*err = ENOMEM;
		return NULL;
	}
	pthread_rwlockattr_t a;
	pthread_rwlockattr_init(&a);
	pthread_rwlockattr_setkind_np(&a, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	pthread_rwlock_init(&s->mlock, &a);
	pthread_rwlockattr_destroy(&a);
	pthread_mutex_init(&s->bmu, NULL);
	pthread_cond_init(&s->bcv, NULL);
	pthread_mutex_init(&s->qmu, NULL);
	pthread_cond_init(&s->qcv, NULL);
	pthread_mutex_init(&s->wmu, NULL);
	return s;
}

void ps_free(pg_snap *s) {
	if (!s) return;
	if (s->drain_on) ps_drain_stop(s);
	for (int k = 0; k < s->nr; k++) {
		ps_range *r = &s->r[k];
		free(r->pending), free(r->claim), free(r->dirty), free(r->epoch), free(r->layer), free(r->parked);
	}
	if (s->buf) munmap(s->buf, s->buf_len);
	free(s->busy);
	free(s->q);
	free(s->held.v), free(s->parked.v);
	free(s);
}

int ps_add(pg_snap *s, uint64_t start, uint64_t len, uint64_t psize, uint64_t off) {
	if (s->nr == PS_MAXR) return E2BIG;
	ps_range *r = &s->r[s->nr];
	memset(r, 0, sizeof *r);
	r->start = start, r->len = len, r->psize = psize, r->off = off;
	while ((1ull << r->shift) < psize) r->shift++;
	r->pages = (int64_t)(len >> r->shift);
	r->words = (r->pages + 63) / 64;
	size_t n = (size_t)r->words + 1;
	r->pending = calloc(n, 8), r->claim = calloc(n, 8), r->dirty = calloc(n, 8), r->epoch = calloc(n, 8), r->layer = calloc(n, 8);
	r->parked = calloc(n, 8);
	if (!r->pending || !r->claim || !r->dirty || !r->epoch || !r->layer || !r->parked) {
		free(r->pending), free(r->claim), free(r->dirty), free(r->epoch), free(r->layer), free(r->parked);
		return ENOMEM;
	}
	s->nr++;
	return 0;
}

char *ps_buffer(pg_snap *s) { return s->buf; }

void ps_set_mode(pg_snap *s, int mode, int track) {
	pthread_rwlock_wrlock(&s->mlock);
	s->mode = mode, s->track = track;
	pthread_rwlock_unlock(&s->mlock);
}

int ps_protect(pg_snap *s, uint64_t start, uint64_t len, int on) { return wp(s, start, len, on); }

// ps_protect_dirty takes the pages marked dirty, adds them to the epoch's
// set and protects them again, one ioctl per run.
int ps_protect_dirty(pg_snap *s, int64_t *pages, int64_t *runs) {
	*pages = 0, *runs = 0;
	for (int k = 0; k < s->nr; k++) {
		ps_range *r = &s->r[k];
		int64_t run0 = -1;
		for (int64_t w = 0; w <= r->words; w++) {
			uint64_t bits = w < r->words ? __atomic_exchange_n(&r->dirty[w], 0, __ATOMIC_SEQ_CST) : 0;
			if (bits) __atomic_fetch_or(&r->epoch[w], bits, __ATOMIC_SEQ_CST);
			*pages += __builtin_popcountll(bits);
			for (int b = 0; b < 64; b++) {
				int64_t i = w * 64 + b;
				int on = (bits >> b) & 1;
				if (on && run0 < 0) run0 = i;
				if (!on && run0 >= 0) {
					int err = wp(s, paddr(r, run0), (uint64_t)(i - run0) << r->shift, 1);
					if (err) return err;
					(*runs)++;
					run0 = -1;
				}
				if (!bits && run0 < 0) break; // nothing more in this word
			}
		}
	}
	return 0;
}

int64_t ps_dirty_count(pg_snap *s) {
	int64_t n = 0;
	for (int k = 0; k < s->nr; k++)
		for (int64_t w = 0; w < s->r[k].words; w++) n += __builtin_popcountll(__atomic_load_n(&s->r[k].dirty[w], __ATOMIC_SEQ_CST));
	return n;
}

// ps_begin_save starts saving at the instant just taken (every page
// protected, writers held): the pages to save are all of them (full) or
// those written since the last snapshot; then the held faults are
// answered by copy-before-write.
int ps_begin_save(pg_snap *s, int full) {
	pthread_rwlock_wrlock(&s->mlock);
	int64_t n = 0;
	for (int k = 0; k < s->nr; k++) {
		ps_range *r = &s->r[k];
		for (int64_t w = 0; w < r->words; w++) {
			uint64_t bits = full ? ~0ull : __atomic_load_n(&r->epoch[w], __ATOMIC_SEQ_CST);
			if (w == r->words - 1 && (r->pages & 63)) bits &= (1ull << (r->pages & 63)) - 1;
			r->layer[w] = bits, r->pending[w] = bits, r->epoch[w] = 0;
			n += __builtin_popcountll(bits);
		}
	}
	s->npending = n;
	s->cur_r = 0, s->cur_i = 0;
	__atomic_store_n(&s->c.hold_ns_max, 0, __ATOMIC_RELAXED); // peaks are per save
	__atomic_store_n(&s->c.park_ns_max, 0, __ATOMIC_RELAXED);
	__atomic_store_n(&s->c.slots_peak, 0, __ATOMIC_RELAXED);
	s->mode = PS_SAVE;
	pthread_rwlock_unlock(&s->mlock);
	int nh;
	ps_wait *v = waits_take(s, &s->held, &nh);
	if (v) {
		answer_waits(s, v, nh, &s->c.hold_ns_max);
		free(v);
	}
	return 0;
}

// ps_instant takes the instant in one call: hold new faults, protect the
// last dirty pages, begin the save. *hold_ns and *instant_ns: when the
// hold began and when the protection returned (CLOCK_MONOTONIC).
int ps_instant(pg_snap *s, int full, int track, int64_t *final, uint64_t *hold_ns, uint64_t *instant_ns) {
	*hold_ns = ps_now();
	ps_set_mode(s, PS_HOLD, track);
	int64_t runs;
	int err = ps_protect_dirty(s, final, &runs);
	*instant_ns = ps_now();
	if (err) return err;
	ps_clear_err(s);
	return ps_begin_save(s, full);
}

// ps_save_step saves the next run of pages still to save (at most
// max_pages), in address order, into free slots, leaving a quarter of the
// slots to faults. With no room it waits for slots up to wait_ms and
// returns 0. *done: nothing is left to save.
int64_t ps_save_step(pg_snap *s, int64_t max_pages, int wait_ms, int *done) {
	*done = 0;
	if (__atomic_load_n(&s->parked.n, __ATOMIC_SEQ_CST)) retry_parked(s);
	if (__atomic_load_n(&s->npending, __ATOMIC_SEQ_CST) <= 0) {
		*done = 1;
		return 0;
	}
	pthread_rwlock_rdlock(&s->mlock);
	int64_t saved = 0;
	int wrapped = 0;
	while (saved == 0) {
		if (s->cur_r >= s->nr) {
			if (wrapped) break; // everything left is claimed by faults
			s->cur_r = 0, s->cur_i = 0, wrapped = 1;
			continue;
		}
		ps_range *r = &s->r[s->cur_r];
		int64_t i = s->cur_i;
		while (i < r->pages) { // the next page to save
			uint64_t w = __atomic_load_n(&r->pending[i >> 6], __ATOMIC_SEQ_CST) >> (i & 63);
			if (w & 1) break;
			i += w ? __builtin_ctzll(w) : 64 - (i & 63);
		}
		if (i >= r->pages) {
			s->cur_r++, s->cur_i = 0;
			continue;
		}
		int64_t per = (int64_t)(r->psize / s->unit);
		int64_t want = max_pages < 1 ? 1 : max_pages;
		int64_t n = 0;
		while (n < want && i + n < r->pages && b_get(r->pending, i + n) && b_tas(r->claim, i + n)) {
			if (!b_get(r->pending, i + n)) {
				b_clr(r->claim, i + n);
				break;
			}
			n++;
		}
		if (n == 0) { // a fault holds it
			s->cur_i = i + 1;
			continue;
		}
		int64_t keep = s->nslots / 4;
		int64_t slot = -1;
		while (n > 0 && (slot = slots_get(s, n * per, keep)) < 0 && n > 1) {
			b_clr(r->claim, i + n - 1);
			n--;
		}
		if (slot < 0) {
			b_clr(r->claim, i);
			pthread_rwlock_unlock(&s->mlock);
			if (wait_ms > 0) {
				struct timespec ts;
				clock_gettime(CLOCK_REALTIME, &ts);
				ts.tv_nsec += (long)wait_ms * 1000000L;
				ts.tv_sec += ts.tv_nsec / 1000000000L, ts.tv_nsec %= 1000000000L;
				pthread_mutex_lock(&s->bmu);
				if (s->nslots - s->used - s->nslots / 4 < per) pthread_cond_timedwait(&s->bcv, &s->bmu, &ts);
				pthread_mutex_unlock(&s->bmu);
			}
			return 0;
		}
		uint64_t a = paddr(r, i), len = (uint64_t)n << r->shift;
		int err = copy_in(s, a, s->buf + (uint64_t)slot * s->unit, len);
		if (err) {
			set_err(s, err);
			slots_put(s, slot, n * per);
			for (int64_t j = i; j < i + n; j++) b_clr(r->claim, j);
			pthread_rwlock_unlock(&s->mlock);
			return -err;
		}
		if (!s->track && (err = wp(s, a, len, 0))) set_err(s, err);
		queue_run(s, r, i, n, slot, 0);
		for (int64_t j = i; j < i + n; j++) b_clr(r->pending, j);
		__atomic_fetch_sub(&s->npending, n, __ATOMIC_SEQ_CST);
		for (int64_t j = i; j < i + n; j++) b_clr(r->claim, j);
		ps_add64(&s->c.bg_pages, (uint64_t)n);
		s->cur_i = i + n;
		saved = n;
	}
	pthread_rwlock_unlock(&s->mlock);
	if (__atomic_load_n(&s->npending, __ATOMIC_SEQ_CST) <= 0) *done = 1;
	return saved;
}

int ps_take(pg_snap *s, ps_entry *out, int cap) {
	pthread_mutex_lock(&s->qmu);
	int n = 0;
	while (n < cap && s->qn > 0) {
		out[n++] = s->q[s->qh];
		s->qh = (s->qh + 1) % s->qcap;
		s->qn--;
	}
	pthread_mutex_unlock(&s->qmu);
	return n;
}

void ps_release(pg_snap *s, int64_t slot, uint64_t len) {
	slots_put(s, slot, (int64_t)((len + s->unit - 1) / s->unit));
	if (__atomic_load_n(&s->parked.n, __ATOMIC_SEQ_CST)) retry_parked(s);
}

static void *drain_main(void *arg) {
	pg_snap *s = arg;
	// Direct I/O where the file system has it: a buffered write can be
	// put to sleep for up to 200 ms by the kernel's dirty-page throttling,
	// and a fault waiting for a free slot would wait as long; a direct
	// write takes the device's time for its bytes. The slots, offsets and
	// lengths are page-aligned, as O_DIRECT wants.
	int fl = fcntl(s->out_fd, F_GETFL);
	int direct = s->direct && fl >= 0 && !(fl & O_DIRECT) && fcntl(s->out_fd, F_SETFL, fl | O_DIRECT) == 0;
	pthread_mutex_lock(&s->qmu);
	for (;;) {
		while (!s->qn && !s->drain_stop) pthread_cond_wait(&s->qcv, &s->qmu);
		if (!s->qn) break;
		ps_entry e = s->q[s->qh];
		s->qh = (s->qh + 1) % s->qcap;
		s->qn--;
		s->drain_busy = 1;
		pthread_mutex_unlock(&s->qmu);
		if (!__atomic_load_n(&s->err, __ATOMIC_SEQ_CST)) {
			const char *p = s->buf + (uint64_t)e.slot * s->unit;
			uint64_t left = e.len;
			int64_t off = (int64_t)e.off;
			while (left) {
				ssize_t n = pwrite(s->out_fd, p, left, off);
				if (n < 0 && errno == EINTR) continue;
				if (n < 0 && errno == EINVAL && direct) { // not for this file after all
					fcntl(s->out_fd, F_SETFL, fl);
					direct = 0;
					continue;
				}
				if (n <= 0) {
					set_err(s, n < 0 ? errno : EIO);
					break;
				}
				p += n, off += n, left -= (uint64_t)n;
				ps_add64(&s->c.written, (uint64_t)n);
			}
		}
		ps_release(s, e.slot, e.len);
		pthread_mutex_lock(&s->qmu);
		s->drain_busy = 0;
		pthread_cond_broadcast(&s->qcv);
	}
	pthread_mutex_unlock(&s->qmu);
	if (direct) fcntl(s->out_fd, F_SETFL, fl);
	return NULL;
}

int ps_drain_fd(pg_snap *s, int fd, int direct) {
	s->out_fd = fd;
	s->direct = direct;
	s->drain_stop = 0;
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	int err = pthread_create(&s->drainer, NULL, drain_main, s);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (!err) s->drain_on = 1;
	return err;
}

// ps_drain_stop waits until every queued run is written, stops the drain
// thread and returns the first error.
int ps_drain_stop(pg_snap *s) {
	if (!s->drain_on) return __atomic_load_n(&s->err, __ATOMIC_SEQ_CST);
	pthread_mutex_lock(&s->qmu);
	s->drain_stop = 1;
	pthread_cond_broadcast(&s->qcv);
	pthread_mutex_unlock(&s->qmu);
	pthread_join(s->drainer, NULL);
	s->drain_on = 0;
	s->out_fd = -1;
	return __atomic_load_n(&s->err, __ATOMIC_SEQ_CST);
}

int ps_error(pg_snap *s) { return __atomic_load_n(&s->err, __ATOMIC_SEQ_CST); }

void ps_clear_err(pg_snap *s) { __atomic_store_n(&s->err, 0, __ATOMIC_SEQ_CST); }

int64_t ps_pending(pg_snap *s) {
	int64_t n = __atomic_load_n(&s->npending, __ATOMIC_SEQ_CST);
	pthread_mutex_lock(&s->qmu);
	n += s->qn + s->drain_busy;
	pthread_mutex_unlock(&s->qmu);
	return n;
}

int ps_layer_bits(pg_snap *s, int k, uint64_t *out, int64_t words) {
	if (k < 0 || k >= s->nr) return EINVAL;
	ps_range *r = &s->r[k];
	for (int64_t w = 0; w < words && w < r->words; w++) out[w] = r->layer[w];
	return 0;
}

int ps_unprotect_all(pg_snap *s) {
	int first = 0;
	for (int k = 0; k < s->nr; k++) {
		int err = wp(s, s->r[k].start, s->r[k].len, 0);
		if (err && !first) first = err;
	}
	return first;
}

// ps_finish ends a completed save. track: keep tracking writes for the
// next snapshot (the pages saved and not written since stay protected);
// else unprotect everything.
int ps_finish(pg_snap *s, int track) {
	pthread_rwlock_wrlock(&s->mlock);
	s->mode = track ? PS_TRACK : PS_OFF;
	s->track = track;
	pthread_rwlock_unlock(&s->mlock);
	if (track) return 0;
	int err = ps_unprotect_all(s);
	for (int k = 0; k < s->nr; k++) memset(s->r[k].dirty, 0, (size_t)s->r[k].words * 8);
	return err;
}

// ps_abort gives up: nothing stays protected, every kept fault is
// released, queued runs are dropped and tracking starts over.
void ps_abort(pg_snap *s) {
	set_err(s, ECANCELED); // the drain thread writes nothing more
	pthread_rwlock_wrlock(&s->mlock);
	s->mode = PS_OFF, s->track = 0;
	for (int k = 0; k < s->nr; k++) {
		ps_range *r = &s->r[k];
		memset(r->pending, 0, (size_t)r->words * 8);
		memset(r->dirty, 0, (size_t)r->words * 8);
		memset(r->epoch, 0, (size_t)r->words * 8);
		memset(r->parked, 0, (size_t)r->words * 8);
	}
	s->npending = 0;
	pthread_rwlock_unlock(&s->mlock);
	ps_unprotect_all(s);
	int n;
	for (int pass = 0; pass < 2; pass++) {
		ps_wait *v = waits_take(s, pass ? &s->parked : &s->held, &n);
		for (int k = 0; k < n; k++) {
			struct uffdio_range rg = {.start = v[k].addr & ~(s->unit - 1), .len = s->unit};
			while (ioctl(s->fd, UFFDIO_WAKE, &rg) && errno == EINTR) {
			}
		}
		free(v);
	}
	if (!s->drain_on) {
		ps_entry e;
		while (ps_take(s, &e, 1) == 1) slots_put(s, e.slot, (int64_t)((e.len + s->unit - 1) / s->unit));
	}
}

void ps_counters_read(pg_snap *s, ps_counters *out) {
	uint64_t *src = (uint64_t *)&s->c, *dst = (uint64_t *)out;
	for (size_t i = 0; i < sizeof s->c / sizeof(uint64_t); i++) dst[i] = __atomic_load_n(&src[i], __ATOMIC_RELAXED);
}
