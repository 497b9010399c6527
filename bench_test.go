package uffd_test

import (
	"context"
	"errors"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/gouffd/uffd"
	"github.com/gouffd/uffd/mem"
)

// BenchmarkWake measures the cost of one userfaultfd ioctl with nothing to
// do: the library's overhead plus a system call.
func BenchmarkWake(b *testing.B) {
	u, err := uffd.Open(uffd.Config{})
	if err != nil {
		b.Fatal(err)
	}
	defer u.Close()
	m, err := mem.Map(mem.Anonymous, mem.PageSize())
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	if _, err := u.Register(m.Addr(), m.Len(), uffd.ModeMissing); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if err := u.Wake(m.Addr(), m.Len()); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCopyNoFault measures UFFDIO_COPY into a registered range that
// nobody is waiting on (prefill), per chunk size; the pages are dropped
// again with MADV_DONTNEED every round, which is part of the figure.
func BenchmarkCopyNoFault(b *testing.B) {
	for _, size := range []int{4 << 10, 64 << 10, 2 << 20} {
		b.Run(sizeName(size), func(b *testing.B) {
			u, err := uffd.Open(uffd.Config{})
			if err != nil {
				b.Fatal(err)
			}
			defer u.Close()
			m, err := mem.Map(mem.Anonymous, size)
			if err != nil {
				b.Fatal(err)
			}
			defer m.Close()
			if _, err := u.Register(m.Addr(), m.Len(), uffd.ModeMissing); err != nil {
				b.Fatal(err)
			}
			src := make([]byte, size)
			b.SetBytes(int64(size))
			for b.Loop() {
				if _, err := u.Copy(m.Addr(), src, 0); err != nil {
					b.Fatal(err)
				}
				if err := unix.Madvise(m.Data, unix.MADV_DONTNEED); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkFault measures a whole fault round trip in one process: a
// goroutine touches each page of a registered region once (a plain load),
// another reads the fault message and copies the page in. ns/op is per
// page; compare with the C reference (`uffd bench --ref --ref-mode naive`,
// internal/bench/ref/refbench.c).
func BenchmarkFault(b *testing.B) {
	ps := mem.PageSize()
	const chunkPages = 4096 // 16 MiB regions, remapped as they run out
	u, err := uffd.Open(uffd.Config{})
	if err != nil {
		b.Fatal(err)
	}
	defer u.Close()
	page := make([]byte, ps)
	for i := range page {
		page[i] = 0x5a
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan error, 1)
	go func() {
		msgs := make([]uffd.Message, 16)
		for {
			n, err := u.ReadMessages(context.Background(), msgs)
			if err != nil {
				if ctx.Err() != nil || errors.Is(err, uffd.ErrClosed) {
					err = nil
				}
				served <- err
				return
			}
			for _, msg := range msgs[:n] {
				_, err := u.Copy(msg.Address, page, 0)
				if errors.Is(err, uffd.ErrPageExists) {
					err = u.Wake(msg.Address, uintptr(ps))
				}
				if err != nil {
					served <- err
					return
				}
			}
		}
	}()

	var m *mem.Mapping
	next := chunkPages
	b.ResetTimer()
	for b.Loop() {
		if next == chunkPages {
			b.StopTimer()
			if m != nil {
				m.Close()
			}
			if m, err = mem.Map(mem.Anonymous, chunkPages*ps); err != nil {
				b.Fatal(err)
			}
			if _, err := u.Register(m.Addr(), m.Len(), uffd.ModeMissing); err != nil {
				b.Fatal(err)
			}
			next = 0
			b.StartTimer()
		}
		if m.Data[next*ps] != 0x5a {
			b.Fatal("page not served")
		}
		next++
	}
	b.StopTimer()
	m.Close()
	cancel()
	u.Close()
	if err := <-served; err != nil {
		b.Fatal(err)
	}
}

func sizeName(n int) string {
	switch {
	case n >= 1<<20:
		return strconv.Itoa(n>>20) + "MiB"
	default:
		return strconv.Itoa(n>>10) + "KiB"
	}
}
