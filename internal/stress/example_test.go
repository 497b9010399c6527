package stress_test

import (
	"context"
	"fmt"
	"log"

	"github.com/gouffd/uffd/internal/stress"
	"github.com/gouffd/uffd/mem"
)

// A program that runs the stress test calls LockerMain first: Run starts
// the same program again as the locker.
func Example() {
	stress.LockerMain()

	res, err := stress.Run(context.Background(), stress.Config{
		Kind:    mem.Shmem,
		Size:    64 << 20,
		Bounces: 16,
		Progress: func(b stress.Bounce) {
			fmt.Printf("bounce %d (%v): %.0f pages/s\n", b.Index, b.Mode, b.PagesPerSecond())
		},
	})
	if err != nil {
		log.Fatal(err) // a counter that does not add up, or a failed copy
	}
	fmt.Printf("%.0f pages/s\n", res.PagesPerSecond())
}
