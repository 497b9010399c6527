// Package pagemap scans a process's page tables with the PAGEMAP_SCAN ioctl
// of /proc/PID/pagemap (Linux 6.7): which pages are present, swapped,
// file-backed, huge, soft-dirty, guard pages, and, for memory registered
// with a userfaultfd in asynchronous write-protect mode, which were written.
//
// # Dirty tracking
//
// Asynchronous write-protection turns userfaultfd into a dirty-page tracker
// without any fault handler: the kernel resolves write-protect faults
// itself and only remembers that the page was written.
//
//	u, _ := uffd.Open(uffd.Config{Features: uffd.FeatureWPAsync | uffd.FeatureWPFaults})
//	u.Register(addr, length, uffd.ModeWriteProtect)
//	u.WriteProtect(addr, length, true, 0)
//	// ... the process writes to the memory ...
//	pm, _ := pagemap.OpenSelf()
//	dirty, _, _ := pm.Scan(addr, addr+length, &pagemap.ScanOptions{
//		Mask:       pagemap.Written,
//		Return:     pagemap.Written,
//		WPMatching: true, // report and write-protect again, atomically
//	})
//
// Each Scan with WPMatching returns the pages written since the previous
// one. The userfaultfd must stay open: closing it unregisters the range,
// and the pages lose their WPAllowed category.
//
// # Scanning
//
// ScanOptions select pages by category (Mask, AnyOf, Inverted), choose the
// categories reported (Return), bound the pages found (MaxPages) and set the
// flags WPMatching and CheckWPAsync. Scan returns every matching region of
// a range. ScanInto writes into a caller's []Region without allocating and
// returns where the kernel stopped when the slice was full or MaxPages was
// reached; scanning again from there resumes the walk.
//
// # Errors and support
//
// Open and OpenSelf check that the kernel has PAGEMAP_SCAN: on an older
// kernel, or another operating system, they fail with an error matching
// uffd.ErrNotSupported. Scan errors are *uffd.OpError values naming
// PAGEMAP_SCAN and the range, matching the errno (EPERM from CheckWPAsync,
// EINVAL from a category the kernel does not know).
//
// # Descriptor lifetime
//
// A Pagemap holds one file descriptor, bound to the address space the
// process had when it was opened. Close it when done; it is safe for
// concurrent use, and Close waits for scans in progress.
package pagemap
