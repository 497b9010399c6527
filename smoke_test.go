package uffd_test

import (
	"context"
	"errors"
	"testing"

	"github.com/gouffd/uffd"
	"github.com/gouffd/uffd/mem"
)

func TestSmoke(t *testing.T) {
	u, err := uffd.Open(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	t.Logf("features avail %v ioctls %v path %v", u.Available(), u.Ioctls(), u.Path())
	m, err := mem.Map(mem.Anonymous, 4*mem.PageSize())
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ioc, err := u.Register(m.Addr(), m.Len(), uffd.ModeMissing)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("range ioctls %v", ioc)
	done := make(chan error, 1)
	go func() {
		page := make([]byte, mem.PageSize())
		msgs := make([]uffd.Message, 8)
		for served := 0; served < m.Pages(); {
			n, err := u.ReadMessages(context.Background(), msgs)
			if err != nil {
				done <- err
				return
			}
			for _, msg := range msgs[:n] {
				for i := range page {
					page[i] = byte(msg.Address >> 12)
				}
				if _, err := u.Copy(msg.Address, page, 0); err != nil && !errors.Is(err, uffd.ErrPageExists) {
					done <- err
					return
				}
				served++
			}
		}
		done <- nil
	}()
	for i := 0; i < m.Pages(); i++ {
		if got, want := m.Page(i)[100], byte(m.PageAddr(i)>>12); got != want {
			t.Errorf("page %d: got %d want %d", i, got, want)
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
