package pagemap_test

import (
	"fmt"
	"log"

	"github.com/gouffd/uffd"
	"github.com/gouffd/uffd/mem"
	"github.com/gouffd/uffd/pagemap"
)

// Dirty tracking: write-protect memory through a userfaultfd in
// asynchronous mode, let the program write, then collect and reset the
// pages written.
func ExamplePagemap_Scan() {
	m, err := mem.Map(mem.Anonymous, 16*mem.PageSize())
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()

	u, err := uffd.Open(uffd.Config{Features: uffd.FeatureWPAsync})
	if err != nil {
		log.Fatal(err)
	}
	defer u.Close()
	if _, err := u.Register(m.Addr(), m.Len(), uffd.ModeWriteProtect); err != nil {
		log.Fatal(err)
	}
	if err := u.WriteProtect(m.Addr(), m.Len(), true, 0); err != nil {
		log.Fatal(err)
	}

	pm, err := pagemap.OpenSelf()
	if err != nil {
		log.Fatal(err)
	}
	defer pm.Close()

	m.Page(2)[0] = 1 // no fault handler needed: the kernel resolves it
	m.Page(3)[9] = 1

	dirty, _, err := pm.Scan(m.Addr(), m.Addr()+m.Len(), &pagemap.ScanOptions{
		Mask:       pagemap.Written,
		Return:     pagemap.Written,
		WPMatching: true, // write-protect them again for the next round
	})
	if err != nil {
		log.Fatal(err)
	}
	for _, r := range dirty {
		fmt.Printf("pages %d to %d written\n", (r.Start-m.Addr())/uintptr(m.PageSize), (r.End-m.Addr())/uintptr(m.PageSize))
	}
	// Prints "pages 2 to 4 written" (not run as a test: creating a
	// userfaultfd may need privilege; TestDirtyTracking covers it).
}

// ScanInto reuses a buffer; a full buffer stops the scan, which resumes
// from where it stopped.
func ExamplePagemap_ScanInto() {
	pm, err := pagemap.OpenSelf()
	if err != nil {
		log.Fatal(err)
	}
	defer pm.Close()
	m, err := mem.Map(mem.Anonymous, 4*mem.PageSize())
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()
	m.Page(0)[0], m.Page(2)[0] = 1, 1

	buf := make([]pagemap.Region, 1)
	opts := &pagemap.ScanOptions{Mask: pagemap.Present, Return: pagemap.Present}
	for start, end := m.Addr(), m.Addr()+m.Len(); start < end; {
		n, next, err := pm.ScanInto(buf, start, end, opts)
		if err != nil {
			log.Fatal(err)
		}
		for _, r := range buf[:n] {
			fmt.Println("present: page", (r.Start-m.Addr())/uintptr(m.PageSize))
		}
		start = next
	}
	// Output:
	// present: page 0
	// present: page 2
}
