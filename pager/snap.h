// Write-protect faults: dirty tracking, holding and copy-before-write, for
// live snapshots (package snapshot). The policy runs here, in C, on the
// engine's reader threads (faults) and in cgo calls or a thread of its own
// (the background saver, the drain to a file): no page is ever claimed
// while Go code runs, so a goroutine that faults inside runtime assembly
// during a stop-the-world is always answered. See Protector in
// protect_cgo.go.
#ifndef PAGER_SNAP_H
#define PAGER_SNAP_H

#include <stdint.h>

// Modes: what a write-protect fault gets.
enum {
	PS_OFF = 0,   // unprotected at once
	PS_TRACK = 1, // marked dirty, unprotected at once
	PS_HOLD = 2,  // kept waiting
	PS_SAVE = 3,  // a page still to save is saved first (copy-before-write)
};

// Entry flags.
enum { PS_E_FAULT = 1 };

// A saved run of pages waiting to be written out: len bytes copied from
// addr, at image offset off, in the slots from slot on.
typedef struct {
	uint64_t addr, len, off;
	int64_t slot;
	uint32_t flags, pad;
} ps_entry;

typedef struct {
	uint64_t wp_faults;   // write-protect fault messages
	uint64_t tracked;     // answered in PS_TRACK
	uint64_t late;        // in PS_SAVE, on a page saved already (tracking, or a repeated message)
	uint64_t held;        // kept in PS_HOLD
	uint64_t cow_faults;  // faults that saved their block first
	uint64_t cow_pages;   // pages saved by those faults
	uint64_t bg_pages;    // pages saved by the background pass
	uint64_t zero_pages;  // saved pages found all zero (not written out)
	uint64_t parked;      // faults that waited for free slots
	uint64_t written;     // bytes written out by the drain thread
	uint64_t protect_ioctls;
	uint64_t slots_peak;  // most slots in use at once
	uint64_t hold_ns_max; // longest a held fault waited
	uint64_t park_ns_max; // longest a parked fault waited
} ps_counters;

typedef struct pg_snap pg_snap;
typedef struct pg_pager pg_pager;

// Life.
pg_snap *ps_new(int fd, int pid, int nfd, uint64_t slots_bytes, uint64_t block, int *err);
void ps_free(pg_snap *s);
int ps_add(pg_snap *s, uint64_t start, uint64_t len, uint64_t psize, uint64_t off);
char *ps_buffer(pg_snap *s);
void pg_set_snap(pg_pager *p, pg_snap *s); // engine.c: route p's write-protect faults to s
// The engine's hook: a write-protect fault at addr read at t0.
void ps_fault(pg_snap *s, uint64_t addr, uint64_t t0);

// Arming.
void ps_set_mode(pg_snap *s, int mode, int track);
int ps_protect(pg_snap *s, uint64_t start, uint64_t len, int on);
int ps_protect_dirty(pg_snap *s, int64_t *pages, int64_t *runs);
int64_t ps_dirty_count(pg_snap *s);
int ps_begin_save(pg_snap *s, int full);
int ps_instant(pg_snap *s, int full, int track, int64_t *final, uint64_t *hold_ns, uint64_t *instant_ns);

// Saving.
int64_t ps_save_step(pg_snap *s, int64_t max_pages, int wait_ms, int *done);
int ps_take(pg_snap *s, ps_entry *out, int cap);
void ps_release(pg_snap *s, int64_t slot, uint64_t len);
int ps_drain_fd(pg_snap *s, int fd, int direct); // write entries to fd from a thread of ours
int ps_drain_stop(pg_snap *s);       // wait until written; returns its first errno
int ps_error(pg_snap *s);
void ps_clear_err(pg_snap *s);
int64_t ps_pending(pg_snap *s);
int ps_layer_bits(pg_snap *s, int r, uint64_t *out, int64_t words);

// Ending.
int ps_finish(pg_snap *s, int track);
void ps_abort(pg_snap *s);
int ps_unprotect_all(pg_snap *s);
void ps_counters_read(pg_snap *s, ps_counters *out);

#endif
