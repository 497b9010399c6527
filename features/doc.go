// Package features reports what the running kernel's userfaultfd supports:
// which creation path works for this process (and why not), the API
// version, every feature, the descriptor's ioctls, which registration
// modes work on which kind of memory and with which range ioctls, and the
// system settings that decide them (page and huge page sizes, the
// vm.unprivileged_userfaultfd sysctl, /dev/userfaultfd, PAGEMAP_SCAN).
//
// It is what `uffd features` prints. Collect gathers a Report by asking the
// kernel, not by comparing version numbers: registrations are real (one
// page of each memory kind, registered, then unregistered and unmapped).
//
// # JSON
//
// Report.WriteJSON writes one object whose field names are stable:
//
//	kernel                     {release, machine}: uname(2)
//	euid                       effective user id of the process
//	cap_sys_ptrace             whether the process has CAP_SYS_PTRACE (effective)
//	open_paths                 [{path: "syscall"|"device"|"user-mode-only", ok, reason,
//	                           error}]: uffd.ProbeConfig; reason says why a path works, error
//	                           why it does not and what to change
//	api                        UFFDIO_API version (170 = 0xaa); 0 when no path works,
//	                           and then nothing below could be asked: every feature
//	                           reads unsupported and registrations is empty
//	features                   [{name, kernel_name, since, supported}], every uffd.Features() bit
//	fd_ioctls                  ["Register", "Unregister", "API"]: ioctls of the descriptor
//	registrations              [{memory, mode, ok, ioctls, errno, error, skipped}]:
//	                           memory is a mem.Kind name, mode a uffd.Mode name; ioctls
//	                           lists the range ioctls (uffd.Ioctl names) when ok; errno
//	                           ("EINVAL") and error explain a refusal; skipped says why
//	                           nothing was tried (no free huge pages)
//	page_size                  base page size in bytes
//	huge_pages                 [{size, total, free, default}]: sizes in bytes, pages per pool
//	unprivileged_userfaultfd   {value, error}: the sysctl, value null when unreadable
//	device                     {path, exists, mode, perm, error}: mode as ls(1)
//	                           prints it ("crw-------"), perm in octal ("0600")
//	pagemap_scan               {supported, error}: the PAGEMAP_SCAN ioctl (Linux 6.7)
//
// The range ioctls are the kernel's answer to UFFDIO_REGISTER, not a
// promise: the kernel lists Move for shmem ranges too, though UFFDIO_MOVE
// only moves anonymous pages.
//
// Fields are only added, never renamed; an "error" or "skipped" field is
// omitted when empty.
package features
