//go:build linux

package remote_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/gouffd/uffd/remote"
)

// An image opened through a host-wide cache: a fault's page is asked for
// urgently and delivered as soon as its bytes are in the mapping. (A local
// file here; s3:// and http(s):// URLs work the same way.)
func ExampleOpen() {
	dir, _ := os.MkdirTemp("", "example")
	defer os.RemoveAll(dir)
	img := filepath.Join(dir, "vm.mem")
	os.WriteFile(img, []byte("hello, remote memory"), 0o600)

	cache, err := remote.OpenCache(filepath.Join(dir, "cache"), 1<<30)
	if err != nil {
		log.Fatal(err)
	}
	defer cache.Close()
	im, err := remote.Open(context.Background(), img, remote.Config{Cache: cache})
	if err != nil {
		log.Fatal(err) // permanent errors (no such object, access denied) come here
	}
	defer im.Close()

	done := make(chan error, 1)
	im.Fetch(0, remote.PageSize, true, func(off, n int64, err error) { done <- err })
	if err := <-done; err != nil {
		log.Fatal(err)
	}
	st := im.State()
	fmt.Printf("%s\n", st.Data[:20])
	// Output: hello, remote memory
}
