package uffd_test

import (
	"errors"
	"sync"
	"testing"

	"github.com/gouffd/uffd"
	"github.com/gouffd/uffd/internal/testutil"
	"github.com/gouffd/uffd/mem"
)

// TestCloseDuringIoctls closes a userfaultfd while goroutines keep issuing
// ioctls on it: each ioctl either succeeds or reports ErrClosed, Close does
// not wait for them, and once they stop both of the UFFD's descriptors are
// gone.
func TestCloseDuringIoctls(t *testing.T) {
	m := mapKind(t, mem.Anonymous, 4)
	before := testutil.FdCount()
	u, err := uffd.Open(uffd.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := u.Register(m.Addr(), m.Len(), uffd.ModeMissing); err != nil {
		t.Fatal(err)
	}
	if got := testutil.FdCount(); got != before+2 {
		t.Errorf("an open UFFD holds %d descriptors, want 2 (its file and the ioctl duplicate)", got-before)
	}

	const workers = 4
	var wg sync.WaitGroup
	started := make(chan struct{}, workers)
	errs := make(chan error, workers)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				err := u.Wake(m.Addr(), m.Len())
				if i == 0 {
					started <- struct{}{}
				}
				if err == nil {
					continue
				}
				if !errors.Is(err, uffd.ErrClosed) {
					errs <- err
				}
				return
			}
		}()
	}
	for range workers {
		<-started
	}
	if err := u.Close(); err != nil {
		t.Fatal(err)
	}
	inGoroutine(t, "ioctls after Close", wg.Wait)
	close(errs)
	for err := range errs {
		t.Errorf("ioctl racing Close: %v (want nil or ErrClosed)", err)
	}
	if got := testutil.FdCount(); got != before {
		t.Errorf("%d descriptors left after Close and the last ioctl", got-before)
	}
	for name, err := range map[string]error{
		"Register":   func() error { _, err := u.Register(m.Addr(), m.Len(), uffd.ModeMissing); return err }(),
		"Unregister": u.Unregister(m.Addr(), m.Len()),
		"Copy":       func() error { _, err := u.Copy(m.Addr(), make([]byte, m.PageSize), 0); return err }(),
		"Wake":       u.Wake(m.Addr(), m.Len()),
		"Close":      u.Close(),
	} {
		if name == "Close" {
			if err != nil {
				t.Errorf("second Close: %v, want nil", err)
			}
			continue
		}
		if !errors.Is(err, uffd.ErrClosed) {
			t.Errorf("%s after Close: %v, want ErrClosed", name, err)
		}
	}
}
