package mem

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// Map maps size bytes of the given kind. size must be a multiple of the
// kind's page size. The memory is not populated.
func Map(kind Kind, size int) (*Mapping, error) {
	m := &Mapping{Kind: kind, PageSize: PageSize(), fd: -1}
	if kind.Huge() {
		hps, err := HugePageSize()
		if err != nil {
			return nil, err
		}
		m.PageSize = hps
	}
	if size <= 0 || size%m.PageSize != 0 {
		return nil, fmt.Errorf("mem: %s mapping of %d bytes: size must be a positive multiple of the page size %d", kind, size, m.PageSize)
	}
	var err error
	switch kind {
	case Anonymous:
		m.Data, err = unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
		if err != nil {
			return nil, fmt.Errorf("mem: mmap %d bytes of anonymous memory: %w", size, err)
		}
		return m, nil
	case Shmem, ShmemPrivate, Hugetlb, HugetlbPrivate:
	default:
		return nil, fmt.Errorf("mem: unknown kind %v", kind)
	}

	flags := unix.MFD_CLOEXEC
	if kind.Huge() {
		flags |= unix.MFD_HUGETLB
	}
	m.fd, err = unix.MemfdCreate("uffd-"+kind.String(), flags)
	if err != nil {
		return nil, fmt.Errorf("mem: memfd_create for %s: %w", kind, err)
	}
	if err = unix.Ftruncate(m.fd, int64(size)); err != nil {
		m.Close()
		return nil, fmt.Errorf("mem: size %s memfd to %d bytes: %w", kind, size, err)
	}
	share := unix.MAP_SHARED
	if !kind.Shared() {
		share = unix.MAP_PRIVATE
	}
	if m.Data, err = unix.Mmap(m.fd, 0, size, unix.PROT_READ|unix.PROT_WRITE, share); err != nil {
		m.Close()
		return nil, m.hugeHint(fmt.Errorf("mem: mmap %d bytes of %s: %w", size, kind, err), size)
	}
	if m.Alias, err = unix.Mmap(m.fd, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED); err != nil {
		m.Close()
		return nil, m.hugeHint(fmt.Errorf("mem: mmap alias of %s: %w", kind, err), size)
	}
	return m, nil
}

func (m *Mapping) hugeHint(err error, size int) error {
	if !m.Kind.Huge() {
		return err
	}
	need, _ := HugePagesFor(m.Kind, size)
	_, avail, _ := HugePages()
	return fmt.Errorf("%w (%s of %d bytes needs %d huge pages of %d bytes, %d are free and unreserved: raise /proc/sys/vm/nr_hugepages)", err, m.Kind, size, need, m.PageSize, avail)
}

// Drop releases the pages of Data in [off, off+n): MADV_DONTNEED, or for
// shared file-backed kinds MADV_REMOVE, which also punches the hole in the
// file. Either raises a REMOVE event on a userfaultfd with
// FeatureEventRemove.
func (m *Mapping) Drop(off, n int) error {
	advice := unix.MADV_DONTNEED
	if m.Kind.Shared() {
		advice = unix.MADV_REMOVE
	}
	return unix.Madvise(m.Data[off:off+n], advice)
}

// Close unmaps both mappings and closes the file. It is idempotent.
func (m *Mapping) Close() error {
	var first error
	for _, b := range []*[]byte{&m.Data, &m.Alias} {
		if *b != nil {
			if err := unix.Munmap(*b); err != nil && first == nil {
				first = err
			}
			*b = nil
		}
	}
	if m.fd >= 0 {
		if err := unix.Close(m.fd); err != nil && first == nil {
			first = err
		}
		m.fd = -1
	}
	return first
}
