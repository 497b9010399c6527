package pager_test

import (
	"context"
	"fmt"
	"log"

	"github.com/gouffd/uffd"
	"github.com/gouffd/uffd/mem"
	"github.com/gouffd/uffd/pager"
)

// Serve 1 MiB of memory from an in-memory image, on first touch.
func Example() {
	image := make([]byte, 1<<20)
	for i := range image {
		image[i] = byte(i >> 12) // each page holds its index
	}

	u, err := uffd.Open(uffd.Config{Features: uffd.FeatureEventRemove})
	if err != nil {
		log.Fatal(err)
	}
	defer u.Close()
	m, err := mem.Map(mem.Anonymous, len(image))
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()
	if _, err := u.Register(m.Addr(), m.Len(), uffd.ModeMissing); err != nil {
		log.Fatal(err)
	}

	p, err := pager.New(u, pager.Config{Prefetch: pager.Adaptive()})
	if err != nil {
		log.Fatal(err)
	}
	if err := p.Add(pager.Region{Start: m.Addr(), Len: m.Len(), Source: pager.Image(image)}); err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- p.Serve(ctx) }()

	// Plain loads only: this process serves its own faults (see the
	// package documentation).
	fmt.Println(m.Data[0], m.Data[5<<12], m.Data[255<<12])
	sum := 0
	for i := 0; i < len(m.Data); i += 4096 {
		sum += int(m.Data[i])
	}
	fmt.Println("sum:", sum)

	cancel()
	if err := <-done; err != nil {
		log.Fatal(err)
	}
	fmt.Println("pages installed:", p.Stats().Pages)
	// Output:
	// 0 5 255
	// sum: 32640
	// pages installed: 256
}

// A source that computes its pages, failing over to SIGBUS when it cannot.
func ExampleFunc() {
	src := pager.Func(64<<20, func(p []byte, off int64) error {
		for i := range p {
			p[i] = byte((off + int64(i)) >> 20) // the MiB index
		}
		return nil
	})
	fmt.Println(src.Size())
	// Output: 67108864
}
