// Package mem maps the kinds of memory that userfaultfd serves, for tests,
// benchmarks and tools: private anonymous memory, shared memory (a memfd)
// mapped shared or private, and hugetlbfs memory (a MFD_HUGETLB memfd)
// mapped shared or private.
//
// Every file-backed Mapping also has an Alias: a second, shared mapping of
// the same file. Writing through the alias fills the page cache without
// faulting on the primary mapping, which is how minor faults
// (uffd.ModeMinor, UFFDIO_CONTINUE) are set up and how a handler can place
// data for zero-copy installs.
//
// Huge pages must be in the pool beforehand (/proc/sys/vm/nr_hugepages):
// HugePagesFor says how many a mapping takes, HugePages how many are
// available, and Map returns an error naming the shortfall otherwise.
package mem
