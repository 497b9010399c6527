/*
 * The kernel ABI as the installed C headers see it, for abi_test.go:
 * every userfaultfd and PAGEMAP_SCAN constant, and the size of every struct
 * and the offset, size and signedness of every field. Whatever the headers may be too old to have is
 * inside #ifdef and reported as absent (present = 0) instead.
 */
#include <stddef.h>
#include <sys/ioctl.h>
#include <linux/version.h>
#include <linux/userfaultfd.h>
#include <linux/fs.h>

struct cdef {
	const char *name;
	unsigned long long value;
	int present;
};

#define DEF(x)   { #x, (unsigned long long)(x), 1 }
#define NODEF(x) { #x, 0, 0 }
#define SIZEOF(s)   { "sizeof(" #s ")", sizeof(struct s), 1 }
#define NOSIZEOF(s) { "sizeof(" #s ")", 0, 0 }
#define OFFSETOF(s, f)   { "offsetof(" #s ", " #f ")", offsetof(struct s, f), 1 }
#define NOOFFSETOF(s, f) { "offsetof(" #s ", " #f ")", 0, 0 }
#define FIELDSIZE(s, f)   { "sizeof(" #s "." #f ")", sizeof(((struct s *)0)->f), 1 }
#define NOFIELDSIZE(s, f) { "sizeof(" #s "." #f ")", 0, 0 }
/* 1 for a signed integer field (__s64), 0 for an unsigned one. */
#define SIGNED(s, f)   { "signed(" #s "." #f ")", (__typeof__(((struct s *)0)->f))-1 < 0, 1 }
#define NOSIGNED(s, f) { "signed(" #s "." #f ")", 0, 0 }

static const struct cdef cdefs[] = {
	DEF(LINUX_VERSION_CODE),
	DEF(UFFD_API),
#ifdef USERFAULTFD_IOC
	DEF(USERFAULTFD_IOC),
#else
	NODEF(USERFAULTFD_IOC),
#endif
#ifdef USERFAULTFD_IOC_NEW
	DEF(USERFAULTFD_IOC_NEW),
#else
	NODEF(USERFAULTFD_IOC_NEW),
#endif
	DEF(UFFDIO),
#ifdef UFFD_USER_MODE_ONLY
	DEF(UFFD_USER_MODE_ONLY),
#else
	NODEF(UFFD_USER_MODE_ONLY),
#endif
#ifdef UFFD_API_REGISTER_MODES
	DEF(UFFD_API_REGISTER_MODES),
#else
	NODEF(UFFD_API_REGISTER_MODES),
#endif
	DEF(UFFD_API_FEATURES),
	DEF(UFFD_API_IOCTLS),
	DEF(UFFD_API_RANGE_IOCTLS),
#ifdef UFFD_API_RANGE_IOCTLS_BASIC
	DEF(UFFD_API_RANGE_IOCTLS_BASIC),
#else
	NODEF(UFFD_API_RANGE_IOCTLS_BASIC),
#endif
#ifdef _UFFDIO_REGISTER
	DEF(_UFFDIO_REGISTER),
#else
	NODEF(_UFFDIO_REGISTER),
#endif
#ifdef _UFFDIO_UNREGISTER
	DEF(_UFFDIO_UNREGISTER),
#else
	NODEF(_UFFDIO_UNREGISTER),
#endif
#ifdef _UFFDIO_WAKE
	DEF(_UFFDIO_WAKE),
#else
	NODEF(_UFFDIO_WAKE),
#endif
#ifdef _UFFDIO_COPY
	DEF(_UFFDIO_COPY),
#else
	NODEF(_UFFDIO_COPY),
#endif
#ifdef _UFFDIO_ZEROPAGE
	DEF(_UFFDIO_ZEROPAGE),
#else
	NODEF(_UFFDIO_ZEROPAGE),
#endif
#ifdef _UFFDIO_MOVE
	DEF(_UFFDIO_MOVE),
#else
	NODEF(_UFFDIO_MOVE),
#endif
#ifdef _UFFDIO_WRITEPROTECT
	DEF(_UFFDIO_WRITEPROTECT),
#else
	NODEF(_UFFDIO_WRITEPROTECT),
#endif
#ifdef _UFFDIO_CONTINUE
	DEF(_UFFDIO_CONTINUE),
#else
	NODEF(_UFFDIO_CONTINUE),
#endif
#ifdef _UFFDIO_POISON
	DEF(_UFFDIO_POISON),
#else
	NODEF(_UFFDIO_POISON),
#endif
#ifdef _UFFDIO_API
	DEF(_UFFDIO_API),
#else
	NODEF(_UFFDIO_API),
#endif
#ifdef UFFDIO_API
	DEF(UFFDIO_API),
#else
	NODEF(UFFDIO_API),
#endif
#ifdef UFFDIO_REGISTER
	DEF(UFFDIO_REGISTER),
#else
	NODEF(UFFDIO_REGISTER),
#endif
#ifdef UFFDIO_UNREGISTER
	DEF(UFFDIO_UNREGISTER),
#else
	NODEF(UFFDIO_UNREGISTER),
#endif
#ifdef UFFDIO_WAKE
	DEF(UFFDIO_WAKE),
#else
	NODEF(UFFDIO_WAKE),
#endif
#ifdef UFFDIO_COPY
	DEF(UFFDIO_COPY),
#else
	NODEF(UFFDIO_COPY),
#endif
#ifdef UFFDIO_ZEROPAGE
	DEF(UFFDIO_ZEROPAGE),
#else
	NODEF(UFFDIO_ZEROPAGE),
#endif
#ifdef UFFDIO_MOVE
	DEF(UFFDIO_MOVE),
#else
	NODEF(UFFDIO_MOVE),
#endif
#ifdef UFFDIO_WRITEPROTECT
	DEF(UFFDIO_WRITEPROTECT),
#else
	NODEF(UFFDIO_WRITEPROTECT),
#endif
#ifdef UFFDIO_CONTINUE
	DEF(UFFDIO_CONTINUE),
#else
	NODEF(UFFDIO_CONTINUE),
#endif
#ifdef UFFDIO_POISON
	DEF(UFFDIO_POISON),
#else
	NODEF(UFFDIO_POISON),
#endif
#ifdef UFFD_EVENT_PAGEFAULT
	DEF(UFFD_EVENT_PAGEFAULT),
#else
	NODEF(UFFD_EVENT_PAGEFAULT),
#endif
#ifdef UFFD_EVENT_FORK
	DEF(UFFD_EVENT_FORK),
#else
	NODEF(UFFD_EVENT_FORK),
#endif
#ifdef UFFD_EVENT_REMAP
	DEF(UFFD_EVENT_REMAP),
#else
	NODEF(UFFD_EVENT_REMAP),
#endif
#ifdef UFFD_EVENT_REMOVE
	DEF(UFFD_EVENT_REMOVE),
#else
	NODEF(UFFD_EVENT_REMOVE),
#endif
#ifdef UFFD_EVENT_UNMAP
	DEF(UFFD_EVENT_UNMAP),
#else
	NODEF(UFFD_EVENT_UNMAP),
#endif
#ifdef UFFD_PAGEFAULT_FLAG_WRITE
	DEF(UFFD_PAGEFAULT_FLAG_WRITE),
#else
	NODEF(UFFD_PAGEFAULT_FLAG_WRITE),
#endif
#ifdef UFFD_PAGEFAULT_FLAG_WP
	DEF(UFFD_PAGEFAULT_FLAG_WP),
#else
	NODEF(UFFD_PAGEFAULT_FLAG_WP),
#endif
#ifdef UFFD_PAGEFAULT_FLAG_MINOR
	DEF(UFFD_PAGEFAULT_FLAG_MINOR),
#else
	NODEF(UFFD_PAGEFAULT_FLAG_MINOR),
#endif
#ifdef UFFD_FEATURE_PAGEFAULT_FLAG_WP
	DEF(UFFD_FEATURE_PAGEFAULT_FLAG_WP),
#else
	NODEF(UFFD_FEATURE_PAGEFAULT_FLAG_WP),
#endif
#ifdef UFFD_FEATURE_EVENT_FORK
	DEF(UFFD_FEATURE_EVENT_FORK),
#else
	NODEF(UFFD_FEATURE_EVENT_FORK),
#endif
#ifdef UFFD_FEATURE_EVENT_REMAP
	DEF(UFFD_FEATURE_EVENT_REMAP),
#else
	NODEF(UFFD_FEATURE_EVENT_REMAP),
#endif
#ifdef UFFD_FEATURE_EVENT_REMOVE
	DEF(UFFD_FEATURE_EVENT_REMOVE),
#else
	NODEF(UFFD_FEATURE_EVENT_REMOVE),
#endif
#ifdef UFFD_FEATURE_MISSING_HUGETLBFS
	DEF(UFFD_FEATURE_MISSING_HUGETLBFS),
#else
	NODEF(UFFD_FEATURE_MISSING_HUGETLBFS),
#endif
#ifdef UFFD_FEATURE_MISSING_SHMEM
	DEF(UFFD_FEATURE_MISSING_SHMEM),
#else
	NODEF(UFFD_FEATURE_MISSING_SHMEM),
#endif
#ifdef UFFD_FEATURE_EVENT_UNMAP
	DEF(UFFD_FEATURE_EVENT_UNMAP),
#else
	NODEF(UFFD_FEATURE_EVENT_UNMAP),
#endif
#ifdef UFFD_FEATURE_SIGBUS
	DEF(UFFD_FEATURE_SIGBUS),
#else
	NODEF(UFFD_FEATURE_SIGBUS),
#endif
#ifdef UFFD_FEATURE_THREAD_ID
	DEF(UFFD_FEATURE_THREAD_ID),
#else
	NODEF(UFFD_FEATURE_THREAD_ID),
#endif
#ifdef UFFD_FEATURE_MINOR_HUGETLBFS
	DEF(UFFD_FEATURE_MINOR_HUGETLBFS),
#else
	NODEF(UFFD_FEATURE_MINOR_HUGETLBFS),
#endif
#ifdef UFFD_FEATURE_MINOR_SHMEM
	DEF(UFFD_FEATURE_MINOR_SHMEM),
#else
	NODEF(UFFD_FEATURE_MINOR_SHMEM),
#endif
#ifdef UFFD_FEATURE_EXACT_ADDRESS
	DEF(UFFD_FEATURE_EXACT_ADDRESS),
#else
	NODEF(UFFD_FEATURE_EXACT_ADDRESS),
#endif
#ifdef UFFD_FEATURE_WP_HUGETLBFS_SHMEM
	DEF(UFFD_FEATURE_WP_HUGETLBFS_SHMEM),
#else
	NODEF(UFFD_FEATURE_WP_HUGETLBFS_SHMEM),
#endif
#ifdef UFFD_FEATURE_WP_UNPOPULATED
	DEF(UFFD_FEATURE_WP_UNPOPULATED),
#else
	NODEF(UFFD_FEATURE_WP_UNPOPULATED),
#endif
#ifdef UFFD_FEATURE_POISON
	DEF(UFFD_FEATURE_POISON),
#else
	NODEF(UFFD_FEATURE_POISON),
#endif
#ifdef UFFD_FEATURE_WP_ASYNC
	DEF(UFFD_FEATURE_WP_ASYNC),
#else
	NODEF(UFFD_FEATURE_WP_ASYNC),
#endif
#ifdef UFFD_FEATURE_MOVE
	DEF(UFFD_FEATURE_MOVE),
#else
	NODEF(UFFD_FEATURE_MOVE),
#endif
#ifdef UFFDIO_REGISTER_MODE_MISSING
	DEF(UFFDIO_REGISTER_MODE_MISSING),
#else
	NODEF(UFFDIO_REGISTER_MODE_MISSING),
#endif
#ifdef UFFDIO_REGISTER_MODE_WP
	DEF(UFFDIO_REGISTER_MODE_WP),
#else
	NODEF(UFFDIO_REGISTER_MODE_WP),
#endif
#ifdef UFFDIO_REGISTER_MODE_MINOR
	DEF(UFFDIO_REGISTER_MODE_MINOR),
#else
	NODEF(UFFDIO_REGISTER_MODE_MINOR),
#endif
#ifdef UFFDIO_COPY_MODE_DONTWAKE
	DEF(UFFDIO_COPY_MODE_DONTWAKE),
#else
	NODEF(UFFDIO_COPY_MODE_DONTWAKE),
#endif
#ifdef UFFDIO_COPY_MODE_WP
	DEF(UFFDIO_COPY_MODE_WP),
#else
	NODEF(UFFDIO_COPY_MODE_WP),
#endif
#ifdef UFFDIO_ZEROPAGE_MODE_DONTWAKE
	DEF(UFFDIO_ZEROPAGE_MODE_DONTWAKE),
#else
	NODEF(UFFDIO_ZEROPAGE_MODE_DONTWAKE),
#endif
#ifdef UFFDIO_WRITEPROTECT_MODE_WP
	DEF(UFFDIO_WRITEPROTECT_MODE_WP),
#else
	NODEF(UFFDIO_WRITEPROTECT_MODE_WP),
#endif
#ifdef UFFDIO_WRITEPROTECT_MODE_DONTWAKE
	DEF(UFFDIO_WRITEPROTECT_MODE_DONTWAKE),
#else
	NODEF(UFFDIO_WRITEPROTECT_MODE_DONTWAKE),
#endif
#ifdef UFFDIO_CONTINUE_MODE_DONTWAKE
	DEF(UFFDIO_CONTINUE_MODE_DONTWAKE),
#else
	NODEF(UFFDIO_CONTINUE_MODE_DONTWAKE),
#endif
#ifdef UFFDIO_CONTINUE_MODE_WP
	DEF(UFFDIO_CONTINUE_MODE_WP),
#else
	NODEF(UFFDIO_CONTINUE_MODE_WP),
#endif
#ifdef UFFDIO_POISON_MODE_DONTWAKE
	DEF(UFFDIO_POISON_MODE_DONTWAKE),
#else
	NODEF(UFFDIO_POISON_MODE_DONTWAKE),
#endif
#ifdef UFFDIO_MOVE_MODE_DONTWAKE
	DEF(UFFDIO_MOVE_MODE_DONTWAKE),
#else
	NODEF(UFFDIO_MOVE_MODE_DONTWAKE),
#endif
#ifdef UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES
	DEF(UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES),
#else
	NODEF(UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES),
#endif
#ifdef PROCFS_IOCTL_MAGIC
	DEF(PROCFS_IOCTL_MAGIC),
#else
	NODEF(PROCFS_IOCTL_MAGIC),
#endif
#ifdef PAGEMAP_SCAN
	DEF(PAGEMAP_SCAN),
#else
	NODEF(PAGEMAP_SCAN),
#endif
#ifdef PAGE_IS_WPALLOWED
	DEF(PAGE_IS_WPALLOWED),
#else
	NODEF(PAGE_IS_WPALLOWED),
#endif
#ifdef PAGE_IS_WRITTEN
	DEF(PAGE_IS_WRITTEN),
#else
	NODEF(PAGE_IS_WRITTEN),
#endif
#ifdef PAGE_IS_FILE
	DEF(PAGE_IS_FILE),
#else
	NODEF(PAGE_IS_FILE),
#endif
#ifdef PAGE_IS_PRESENT
	DEF(PAGE_IS_PRESENT),
#else
	NODEF(PAGE_IS_PRESENT),
#endif
#ifdef PAGE_IS_SWAPPED
	DEF(PAGE_IS_SWAPPED),
#else
	NODEF(PAGE_IS_SWAPPED),
#endif
#ifdef PAGE_IS_PFNZERO
	DEF(PAGE_IS_PFNZERO),
#else
	NODEF(PAGE_IS_PFNZERO),
#endif
#ifdef PAGE_IS_HUGE
	DEF(PAGE_IS_HUGE),
#else
	NODEF(PAGE_IS_HUGE),
#endif
#ifdef PAGE_IS_SOFT_DIRTY
	DEF(PAGE_IS_SOFT_DIRTY),
#else
	NODEF(PAGE_IS_SOFT_DIRTY),
#endif
#ifdef PAGE_IS_GUARD
	DEF(PAGE_IS_GUARD),
#else
	NODEF(PAGE_IS_GUARD),
#endif
#ifdef PM_SCAN_WP_MATCHING
	DEF(PM_SCAN_WP_MATCHING),
#else
	NODEF(PM_SCAN_WP_MATCHING),
#endif
#ifdef PM_SCAN_CHECK_WPASYNC
	DEF(PM_SCAN_CHECK_WPASYNC),
#else
	NODEF(PM_SCAN_CHECK_WPASYNC),
#endif
	SIZEOF(uffd_msg),
	OFFSETOF(uffd_msg, event),
	FIELDSIZE(uffd_msg, event),
	SIGNED(uffd_msg, event),
	OFFSETOF(uffd_msg, reserved1),
	FIELDSIZE(uffd_msg, reserved1),
	SIGNED(uffd_msg, reserved1),
	OFFSETOF(uffd_msg, reserved2),
	FIELDSIZE(uffd_msg, reserved2),
	SIGNED(uffd_msg, reserved2),
	OFFSETOF(uffd_msg, reserved3),
	FIELDSIZE(uffd_msg, reserved3),
	SIGNED(uffd_msg, reserved3),
	OFFSETOF(uffd_msg, arg),
	FIELDSIZE(uffd_msg, arg),
	OFFSETOF(uffd_msg, arg.pagefault.flags),
	FIELDSIZE(uffd_msg, arg.pagefault.flags),
	SIGNED(uffd_msg, arg.pagefault.flags),
	OFFSETOF(uffd_msg, arg.pagefault.address),
	FIELDSIZE(uffd_msg, arg.pagefault.address),
	SIGNED(uffd_msg, arg.pagefault.address),
	OFFSETOF(uffd_msg, arg.fork.ufd),
	FIELDSIZE(uffd_msg, arg.fork.ufd),
	SIGNED(uffd_msg, arg.fork.ufd),
	OFFSETOF(uffd_msg, arg.remap.from),
	FIELDSIZE(uffd_msg, arg.remap.from),
	SIGNED(uffd_msg, arg.remap.from),
	OFFSETOF(uffd_msg, arg.remap.to),
	FIELDSIZE(uffd_msg, arg.remap.to),
	SIGNED(uffd_msg, arg.remap.to),
	OFFSETOF(uffd_msg, arg.remap.len),
	FIELDSIZE(uffd_msg, arg.remap.len),
	SIGNED(uffd_msg, arg.remap.len),
	OFFSETOF(uffd_msg, arg.remove.start),
	FIELDSIZE(uffd_msg, arg.remove.start),
	SIGNED(uffd_msg, arg.remove.start),
	OFFSETOF(uffd_msg, arg.remove.end),
	FIELDSIZE(uffd_msg, arg.remove.end),
	SIGNED(uffd_msg, arg.remove.end),
	OFFSETOF(uffd_msg, arg.reserved.reserved1),
	FIELDSIZE(uffd_msg, arg.reserved.reserved1),
	SIGNED(uffd_msg, arg.reserved.reserved1),
	OFFSETOF(uffd_msg, arg.reserved.reserved2),
	FIELDSIZE(uffd_msg, arg.reserved.reserved2),
	SIGNED(uffd_msg, arg.reserved.reserved2),
	OFFSETOF(uffd_msg, arg.reserved.reserved3),
	FIELDSIZE(uffd_msg, arg.reserved.reserved3),
	SIGNED(uffd_msg, arg.reserved.reserved3),
#ifdef UFFD_FEATURE_THREAD_ID
	OFFSETOF(uffd_msg, arg.pagefault.feat.ptid),
	FIELDSIZE(uffd_msg, arg.pagefault.feat.ptid),
	SIGNED(uffd_msg, arg.pagefault.feat.ptid),
#else
	NOOFFSETOF(uffd_msg, arg.pagefault.feat.ptid),
	NOFIELDSIZE(uffd_msg, arg.pagefault.feat.ptid),
	NOSIGNED(uffd_msg, arg.pagefault.feat.ptid),
#endif
	SIZEOF(uffdio_api),
	OFFSETOF(uffdio_api, api),
	FIELDSIZE(uffdio_api, api),
	SIGNED(uffdio_api, api),
	OFFSETOF(uffdio_api, features),
	FIELDSIZE(uffdio_api, features),
	SIGNED(uffdio_api, features),
	OFFSETOF(uffdio_api, ioctls),
	FIELDSIZE(uffdio_api, ioctls),
	SIGNED(uffdio_api, ioctls),
	SIZEOF(uffdio_range),
	OFFSETOF(uffdio_range, start),
	FIELDSIZE(uffdio_range, start),
	SIGNED(uffdio_range, start),
	OFFSETOF(uffdio_range, len),
	FIELDSIZE(uffdio_range, len),
	SIGNED(uffdio_range, len),
	SIZEOF(uffdio_register),
	OFFSETOF(uffdio_register, range),
	FIELDSIZE(uffdio_register, range),
	OFFSETOF(uffdio_register, range.start),
	FIELDSIZE(uffdio_register, range.start),
	SIGNED(uffdio_register, range.start),
	OFFSETOF(uffdio_register, range.len),
	FIELDSIZE(uffdio_register, range.len),
	SIGNED(uffdio_register, range.len),
	OFFSETOF(uffdio_register, mode),
	FIELDSIZE(uffdio_register, mode),
	SIGNED(uffdio_register, mode),
	OFFSETOF(uffdio_register, ioctls),
	FIELDSIZE(uffdio_register, ioctls),
	SIGNED(uffdio_register, ioctls),
	SIZEOF(uffdio_copy),
	OFFSETOF(uffdio_copy, dst),
	FIELDSIZE(uffdio_copy, dst),
	SIGNED(uffdio_copy, dst),
	OFFSETOF(uffdio_copy, src),
	FIELDSIZE(uffdio_copy, src),
	SIGNED(uffdio_copy, src),
	OFFSETOF(uffdio_copy, len),
	FIELDSIZE(uffdio_copy, len),
	SIGNED(uffdio_copy, len),
	OFFSETOF(uffdio_copy, mode),
	FIELDSIZE(uffdio_copy, mode),
	SIGNED(uffdio_copy, mode),
	OFFSETOF(uffdio_copy, copy),
	FIELDSIZE(uffdio_copy, copy),
	SIGNED(uffdio_copy, copy),
	SIZEOF(uffdio_zeropage),
	OFFSETOF(uffdio_zeropage, range),
	FIELDSIZE(uffdio_zeropage, range),
	OFFSETOF(uffdio_zeropage, mode),
	FIELDSIZE(uffdio_zeropage, mode),
	SIGNED(uffdio_zeropage, mode),
	OFFSETOF(uffdio_zeropage, zeropage),
	FIELDSIZE(uffdio_zeropage, zeropage),
	SIGNED(uffdio_zeropage, zeropage),
#ifdef UFFDIO_WRITEPROTECT
	SIZEOF(uffdio_writeprotect),
	OFFSETOF(uffdio_writeprotect, range),
	FIELDSIZE(uffdio_writeprotect, range),
	OFFSETOF(uffdio_writeprotect, mode),
	FIELDSIZE(uffdio_writeprotect, mode),
	SIGNED(uffdio_writeprotect, mode),
#else
	NOSIZEOF(uffdio_writeprotect),
	NOOFFSETOF(uffdio_writeprotect, range),
	NOFIELDSIZE(uffdio_writeprotect, range),
	NOOFFSETOF(uffdio_writeprotect, mode),
	NOFIELDSIZE(uffdio_writeprotect, mode),
	NOSIGNED(uffdio_writeprotect, mode),
#endif
#ifdef UFFDIO_CONTINUE
	SIZEOF(uffdio_continue),
	OFFSETOF(uffdio_continue, range),
	FIELDSIZE(uffdio_continue, range),
	OFFSETOF(uffdio_continue, mode),
	FIELDSIZE(uffdio_continue, mode),
	SIGNED(uffdio_continue, mode),
	OFFSETOF(uffdio_continue, mapped),
	FIELDSIZE(uffdio_continue, mapped),
	SIGNED(uffdio_continue, mapped),
#else
	NOSIZEOF(uffdio_continue),
	NOOFFSETOF(uffdio_continue, range),
	NOFIELDSIZE(uffdio_continue, range),
	NOOFFSETOF(uffdio_continue, mode),
	NOFIELDSIZE(uffdio_continue, mode),
	NOSIGNED(uffdio_continue, mode),
	NOOFFSETOF(uffdio_continue, mapped),
	NOFIELDSIZE(uffdio_continue, mapped),
	NOSIGNED(uffdio_continue, mapped),
#endif
#ifdef UFFDIO_POISON
	SIZEOF(uffdio_poison),
	OFFSETOF(uffdio_poison, range),
	FIELDSIZE(uffdio_poison, range),
	OFFSETOF(uffdio_poison, mode),
	FIELDSIZE(uffdio_poison, mode),
	SIGNED(uffdio_poison, mode),
	OFFSETOF(uffdio_poison, updated),
	FIELDSIZE(uffdio_poison, updated),
	SIGNED(uffdio_poison, updated),
#else
	NOSIZEOF(uffdio_poison),
	NOOFFSETOF(uffdio_poison, range),
	NOFIELDSIZE(uffdio_poison, range),
	NOOFFSETOF(uffdio_poison, mode),
	NOFIELDSIZE(uffdio_poison, mode),
	NOSIGNED(uffdio_poison, mode),
	NOOFFSETOF(uffdio_poison, updated),
	NOFIELDSIZE(uffdio_poison, updated),
	NOSIGNED(uffdio_poison, updated),
#endif
#ifdef UFFDIO_MOVE
	SIZEOF(uffdio_move),
	OFFSETOF(uffdio_move, dst),
	FIELDSIZE(uffdio_move, dst),
	SIGNED(uffdio_move, dst),
	OFFSETOF(uffdio_move, src),
	FIELDSIZE(uffdio_move, src),
	SIGNED(uffdio_move, src),
	OFFSETOF(uffdio_move, len),
	FIELDSIZE(uffdio_move, len),
	SIGNED(uffdio_move, len),
	OFFSETOF(uffdio_move, mode),
	FIELDSIZE(uffdio_move, mode),
	SIGNED(uffdio_move, mode),
	OFFSETOF(uffdio_move, move),
	FIELDSIZE(uffdio_move, move),
	SIGNED(uffdio_move, move),
#else
	NOSIZEOF(uffdio_move),
	NOOFFSETOF(uffdio_move, dst),
	NOFIELDSIZE(uffdio_move, dst),
	NOSIGNED(uffdio_move, dst),
	NOOFFSETOF(uffdio_move, src),
	NOFIELDSIZE(uffdio_move, src),
	NOSIGNED(uffdio_move, src),
	NOOFFSETOF(uffdio_move, len),
	NOFIELDSIZE(uffdio_move, len),
	NOSIGNED(uffdio_move, len),
	NOOFFSETOF(uffdio_move, mode),
	NOFIELDSIZE(uffdio_move, mode),
	NOSIGNED(uffdio_move, mode),
	NOOFFSETOF(uffdio_move, move),
	NOFIELDSIZE(uffdio_move, move),
	NOSIGNED(uffdio_move, move),
#endif
#ifdef PAGEMAP_SCAN
	SIZEOF(pm_scan_arg),
	OFFSETOF(pm_scan_arg, size),
	FIELDSIZE(pm_scan_arg, size),
	SIGNED(pm_scan_arg, size),
	OFFSETOF(pm_scan_arg, flags),
	FIELDSIZE(pm_scan_arg, flags),
	SIGNED(pm_scan_arg, flags),
	OFFSETOF(pm_scan_arg, start),
	FIELDSIZE(pm_scan_arg, start),
	SIGNED(pm_scan_arg, start),
	OFFSETOF(pm_scan_arg, end),
	FIELDSIZE(pm_scan_arg, end),
	SIGNED(pm_scan_arg, end),
	OFFSETOF(pm_scan_arg, walk_end),
	FIELDSIZE(pm_scan_arg, walk_end),
	SIGNED(pm_scan_arg, walk_end),
	OFFSETOF(pm_scan_arg, vec),
	FIELDSIZE(pm_scan_arg, vec),
	SIGNED(pm_scan_arg, vec),
	OFFSETOF(pm_scan_arg, vec_len),
	FIELDSIZE(pm_scan_arg, vec_len),
	SIGNED(pm_scan_arg, vec_len),
	OFFSETOF(pm_scan_arg, max_pages),
	FIELDSIZE(pm_scan_arg, max_pages),
	SIGNED(pm_scan_arg, max_pages),
	OFFSETOF(pm_scan_arg, category_inverted),
	FIELDSIZE(pm_scan_arg, category_inverted),
	SIGNED(pm_scan_arg, category_inverted),
	OFFSETOF(pm_scan_arg, category_mask),
	FIELDSIZE(pm_scan_arg, category_mask),
	SIGNED(pm_scan_arg, category_mask),
	OFFSETOF(pm_scan_arg, category_anyof_mask),
	FIELDSIZE(pm_scan_arg, category_anyof_mask),
	SIGNED(pm_scan_arg, category_anyof_mask),
	OFFSETOF(pm_scan_arg, return_mask),
	FIELDSIZE(pm_scan_arg, return_mask),
	SIGNED(pm_scan_arg, return_mask),
#else
	NOSIZEOF(pm_scan_arg),
	NOOFFSETOF(pm_scan_arg, size),
	NOFIELDSIZE(pm_scan_arg, size),
	NOSIGNED(pm_scan_arg, size),
	NOOFFSETOF(pm_scan_arg, flags),
	NOFIELDSIZE(pm_scan_arg, flags),
	NOSIGNED(pm_scan_arg, flags),
	NOOFFSETOF(pm_scan_arg, start),
	NOFIELDSIZE(pm_scan_arg, start),
	NOSIGNED(pm_scan_arg, start),
	NOOFFSETOF(pm_scan_arg, end),
	NOFIELDSIZE(pm_scan_arg, end),
	NOSIGNED(pm_scan_arg, end),
	NOOFFSETOF(pm_scan_arg, walk_end),
	NOFIELDSIZE(pm_scan_arg, walk_end),
	NOSIGNED(pm_scan_arg, walk_end),
	NOOFFSETOF(pm_scan_arg, vec),
	NOFIELDSIZE(pm_scan_arg, vec),
	NOSIGNED(pm_scan_arg, vec),
	NOOFFSETOF(pm_scan_arg, vec_len),
	NOFIELDSIZE(pm_scan_arg, vec_len),
	NOSIGNED(pm_scan_arg, vec_len),
	NOOFFSETOF(pm_scan_arg, max_pages),
	NOFIELDSIZE(pm_scan_arg, max_pages),
	NOSIGNED(pm_scan_arg, max_pages),
	NOOFFSETOF(pm_scan_arg, category_inverted),
	NOFIELDSIZE(pm_scan_arg, category_inverted),
	NOSIGNED(pm_scan_arg, category_inverted),
	NOOFFSETOF(pm_scan_arg, category_mask),
	NOFIELDSIZE(pm_scan_arg, category_mask),
	NOSIGNED(pm_scan_arg, category_mask),
	NOOFFSETOF(pm_scan_arg, category_anyof_mask),
	NOFIELDSIZE(pm_scan_arg, category_anyof_mask),
	NOSIGNED(pm_scan_arg, category_anyof_mask),
	NOOFFSETOF(pm_scan_arg, return_mask),
	NOFIELDSIZE(pm_scan_arg, return_mask),
	NOSIGNED(pm_scan_arg, return_mask),
#endif
#ifdef PAGEMAP_SCAN
	SIZEOF(page_region),
	OFFSETOF(page_region, start),
	FIELDSIZE(page_region, start),
	SIGNED(page_region, start),
	OFFSETOF(page_region, end),
	FIELDSIZE(page_region, end),
	SIGNED(page_region, end),
	OFFSETOF(page_region, categories),
	FIELDSIZE(page_region, categories),
	SIGNED(page_region, categories),
#else
	NOSIZEOF(page_region),
	NOOFFSETOF(page_region, start),
	NOFIELDSIZE(page_region, start),
	NOSIGNED(page_region, start),
	NOOFFSETOF(page_region, end),
	NOFIELDSIZE(page_region, end),
	NOSIGNED(page_region, end),
	NOOFFSETOF(page_region, categories),
	NOFIELDSIZE(page_region, categories),
	NOSIGNED(page_region, categories),
#endif
};

/* cgo cannot reach static variables; these functions hand the table out. */
static const struct cdef *cdefs_table(void) { return cdefs; }
static int cdefs_len(void) { return sizeof(cdefs) / sizeof(cdefs[0]); }
