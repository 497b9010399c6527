// The pager's fault policy and the threads that run it.
//
// Everything that happens between a fault message and the ioctl that
// answers it lives here, in C, once: choosing what to install (claims,
// prefetch windows, removed pages), installing it, and reading the kernel's
// answers. It runs on threads of its own (pthreads, one per CPU, pinned),
// which never call Go: a garbage collection's stop-the-world cannot stop
// them, and they need no P of the Go scheduler. Go keeps what is Go's:
// reading sources that are not in memory, retries with backoff, error
// policies, callbacks; it talks to this code through the functions below
// and an eventfd per pager.
#ifndef PAGER_ENGINE_H
#define PAGER_ENGINE_H

#include <stdint.h>

// Kinds of sources.
enum { PG_SRC_ZERO = 0, PG_SRC_MAPPED = 1, PG_SRC_CACHE = 2, PG_SRC_GO = 3 };

// Outcomes of an install (pg_install_req, pg_resolve).
enum {
	PG_OK = 0,     // installed (or found installed)
	PG_NEED = 1,   // the pages from *at on need data from Go; still claimed
	PG_SRCERR = 2, // the source could not be read (EFAULT); still claimed
	PG_RETRY = 3,  // an event is pending (EAGAIN): released, woken
	PG_NOMAP = 4,  // no longer mapped there: released, woken
	PG_GONE = 5,   // the process is gone (ESRCH)
	PG_FAILED = 6, // another error: released, woken
};

// Kinds of requests to Go.
enum { PG_REQ_READ = 1, PG_REQ_FETCH = 2, PG_REQ_RETRY = 3 };

// Kinds of recorded errors.
enum { PG_ERR_OUTSIDE = 1, PG_ERR_IOCTL = 2, PG_ERR_READ = 3 };

// Error policies.
enum { PG_POISON = 0, PG_WAIT = 1 };

#define PG_BUCKETS 40

typedef struct pg_state pg_state;
typedef struct pg_pager pg_pager;
typedef struct pg_engine pg_engine;

// A region as Go describes it to pg_add.
typedef struct {
	uint64_t start, len, psize;
	int64_t off;       // the source offset of start
	const char *data;  // MAPPED, CACHE: the source's byte 0
	int32_t id;        // Go's index of the region's source
	int32_t src;       // PG_SRC_*
	int32_t policy;    // PG_POISON, PG_WAIT
	uint32_t chunk_shift;  // CACHE
	uint64_t *present;     // CACHE: a bit per 4 KiB page of the source
	uint64_t *czero;       // CACHE: a bit per 4 KiB page known to be zero, or NULL
	int32_t *pins;         // CACHE: a count per chunk
} pg_desc;

// A request for Go: pages [idx, idx+len/psize) of st, claimed, at addr when
// they were claimed.
typedef struct {
	uint32_t kind;  // PG_REQ_*
	int32_t id;     // the region's source
	int32_t err;    // PG_REQ_RETRY: the errno
	int32_t urgent; // a thread waits for it
	uint64_t addr, len, psize;
	uint64_t fault; // the faulting page's address, or 0
	int64_t off;    // the source offset of addr
	uint64_t t0;    // when the fault was read
	pg_state *st;
	int64_t idx;
} pg_req;

typedef struct {
	int32_t kind, err, id, pad;
	uint64_t addr, len;
} pg_err;

// Counters, as Go's Stats.
typedef struct {
	uint64_t faults, pages, bytes, prefetched, filled, zeroed, exists;
	uint64_t retries, source_errors, poisoned, outside;
	uint64_t removes, unmaps, remaps, forks;
	uint64_t latency[PG_BUCKETS];
} pg_counters;

// What Go reads back of the layout.
typedef struct {
	uint64_t start, len;
	int64_t off;
	int32_t id, pad;
} pg_span;

// Status bits of a pager (pg_status).
enum { PG_ST_GONE = 1, PG_ST_FATAL = 2 };

// Engines. spin_ns: how long readers spin after the last message read
// before they block (0: they never spin).
pg_engine *pg_engine_new(const int *cpus, int n, int64_t spin_ns, int *err);
void pg_engine_free(pg_engine *e);
int pg_engine_attach(pg_engine *e, pg_pager *p);
void pg_engine_detach(pg_engine *e, pg_pager *p);
int pg_engine_threads(pg_engine *e, int *tids, int cap);

// Pagers.
pg_pager *pg_new(int fd, int nfd, int events, int poison, int64_t pf_min, int64_t pf_max, int adaptive, int trace);
void pg_free(pg_pager *p);
int pg_add(pg_pager *p, const pg_desc *d);
pg_pager *pg_take_fork(pg_pager *p, int *fd);
void pg_set_fds(pg_pager *p, int fd, int nfd);

int pg_take_reqs(pg_pager *p, pg_req *out, int cap);
int pg_take_errs(pg_pager *p, pg_err *out, int cap, uint64_t *dropped);
int pg_take_trace(pg_pager *p, uint64_t *out, int cap);
int pg_status(pg_pager *p, int *err);
void pg_counters_read(pg_pager *p, pg_counters *out);
int64_t pg_pending(pg_pager *p);

int pg_install_req(pg_pager *p, const pg_req *q, const char *buf, uint64_t *at);
void pg_release_req(pg_pager *p, const pg_req *q);
void pg_unclaim_req(pg_pager *p, const pg_req *q);
int pg_poison_req(pg_pager *p, const pg_req *q);
void pg_count(pg_pager *p, uint64_t retries, uint64_t source_errors);
int pg_resolve(pg_pager *p, uint64_t *addr, uint64_t end, uint64_t chunk, pg_req *q);
int pg_probe(pg_pager *p);

int pg_resolved(pg_pager *p, uint64_t addr);
int pg_spans(pg_pager *p, pg_span *out, int cap);
int pg_removed(pg_pager *p, uint64_t *out, int cap);
void pg_mark_removed(pg_pager *p, uint64_t start, uint64_t end);
void pg_release_all(pg_pager *p);

#endif
