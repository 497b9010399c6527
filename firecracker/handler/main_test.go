//go:build linux

package handler_test

import (
	"os"
	"testing"

	"github.com/gouffd/uffd/firecracker/fctest"
	"github.com/gouffd/uffd/internal/testutil"
)

// TestMain runs the tests, or, in a process started by fctest.Command, a
// test VM.
func TestMain(m *testing.M) {
	if fctest.Child() {
		os.Exit(fctest.Main())
	}
	os.Exit(testutil.Main(m))
}
