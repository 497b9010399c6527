package pagemap

import (
	"errors"
	"strings"
	"testing"

	"github.com/gouffd/uffd"
)

// A file without PAGEMAP_SCAN answers ENOTTY, as /proc/PID/pagemap does
// before Linux 6.7; open must turn that into ErrNotSupported.
func TestNotSupported(t *testing.T) {
	p, err := open("/proc/self/status")
	if err == nil {
		p.Close()
		t.Fatal("open of a file without PAGEMAP_SCAN succeeded")
	}
	if !errors.Is(err, uffd.ErrNotSupported) {
		t.Fatalf("%v: does not match ErrNotSupported", err)
	}
	for _, want := range []string{"PAGEMAP_SCAN", "Linux 6.7"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q does not name %s", err, want)
		}
	}
}
