package uffd_test

import (
	"context"
	"fmt"

	"github.com/gouffd/uffd"
	"github.com/gouffd/uffd/mem"
)

// Open a userfaultfd with the features you need; the kernel's other
// features stay off.
func ExampleOpen() {
	u, err := uffd.Open(uffd.Config{Features: uffd.FeatureExactAddress})
	if err != nil {
		fmt.Println(err) // the error says what to change: a sysctl, a capability, the device's mode
		return
	}
	defer u.Close()
	fmt.Println("enabled:", u.Features())
	fmt.Println("descriptor ioctls:", u.Ioctls())
	fmt.Println("all features offered:", u.Available().Has(uffd.FeatureExactAddress|uffd.FeatureMove))
	// Output:
	// enabled: ExactAddress
	// descriptor ioctls: Register|Unregister|API
	// all features offered: true
}

// Register a range of memory; the kernel answers with the ioctls that
// resolve its faults.
func ExampleUFFD_Register() {
	u, err := uffd.Open(uffd.Config{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer u.Close()
	m, err := mem.Map(mem.Anonymous, 4*mem.PageSize())
	if err != nil {
		fmt.Println(err)
		return
	}
	defer m.Close()

	ioctls, err := u.Register(m.Addr(), m.Len(), uffd.ModeMissing)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("Copy:", ioctls.Has(uffd.IoctlCopy), "ZeroPage:", ioctls.Has(uffd.IoctlZeroPage), "Continue:", ioctls.Has(uffd.IoctlContinue))
	fmt.Println(u.Unregister(m.Addr(), m.Len()))
	// Output:
	// Copy: true ZeroPage: true Continue: false
	// <nil>
}

// Serve a page fault with Copy. The faulting goroutine touches the page
// with a plain single-byte load: never copy() or other runtime assembly on
// registered memory (see "Faults of the Go process itself").
func ExampleUFFD_Copy() {
	u, err := uffd.Open(uffd.Config{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer u.Close()
	m, err := mem.Map(mem.Anonymous, mem.PageSize())
	if err != nil {
		fmt.Println(err)
		return
	}
	defer m.Close()
	if _, err := u.Register(m.Addr(), m.Len(), uffd.ModeMissing); err != nil {
		fmt.Println(err)
		return
	}

	got := make(chan byte, 1)
	go func() {
		// A plain load faults and waits until the page is served. Never
		// hand registered memory to copy, append or a channel send: those
		// fault inside runtime code that a garbage collection cannot stop.
		b := m.Data[100]
		got <- b
	}()

	msgs := make([]uffd.Message, 1)
	if _, err := u.ReadMessages(context.Background(), msgs); err != nil {
		fmt.Println(err)
		return
	}
	page := make([]byte, mem.PageSize())
	for i := range page {
		page[i] = 'x'
	}
	// Without FeatureExactAddress the address is the page's.
	n, err := u.Copy(msgs[0].Address, page, 0) // wakes the faulting goroutine
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(n == len(page))
	fmt.Printf("%c\n", <-got)
	// Output:
	// true
	// x
}

// Read the events of a userfaultfd: here one page fault, at its exact
// address thanks to FeatureExactAddress, served with a zero page.
func ExampleUFFD_ReadMessages() {
	u, err := uffd.Open(uffd.Config{Features: uffd.FeatureExactAddress})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer u.Close()
	m, err := mem.Map(mem.Anonymous, 2*mem.PageSize())
	if err != nil {
		fmt.Println(err)
		return
	}
	defer m.Close()
	if _, err := u.Register(m.Addr(), m.Len(), uffd.ModeMissing); err != nil {
		fmt.Println(err)
		return
	}

	done := make(chan struct{})
	go func() {
		m.Data[mem.PageSize()+7] = 1 // a write fault on the second page
		close(done)
	}()

	msgs := make([]uffd.Message, 8)
	n, err := u.ReadMessages(context.Background(), msgs)
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, msg := range msgs[:n] {
		off := int(msg.Address - m.Addr())
		fmt.Printf("%v on page %d at offset %d, flags %v\n", msg.Event, off/mem.PageSize(), off%mem.PageSize(), msg.Flags)
		page := msg.Address &^ uintptr(mem.PageSize()-1)
		if _, err := u.ZeroPage(page, uintptr(mem.PageSize()), 0); err != nil {
			fmt.Println(err)
			return
		}
	}
	<-done
	fmt.Println(m.Data[mem.PageSize()+7])
	// Output:
	// Pagefault on page 1 at offset 7, flags Write
	// 1
}
