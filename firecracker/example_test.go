//go:build linux

package firecracker_test

import (
	"log"
	"net"
	"os"
	"time"

	"github.com/gouffd/uffd"
	"github.com/gouffd/uffd/firecracker"
	"github.com/gouffd/uffd/handoff"
)

// A handler of one's own: accept Firecracker's connection, read and check
// its handshake, and adopt the userfaultfd; then serve its faults (with
// package pager, or a loop of uffd.ReadMessages and uffd.Copy) from the
// memory file at each region's Offset.
func Example() {
	const memFile = "/srv/vm1/snapshot.mem"
	st, err := os.Stat(memFile)
	if err != nil {
		log.Fatal(err)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: "/run/my-handler.sock", Net: "unix"})
	if err != nil {
		log.Fatal(err)
	}
	c, err := ln.AcceptUnix()
	if err != nil {
		log.Fatal(err)
	}
	hs, err := firecracker.ReadHandshake(c, 0, time.Now().Add(5*time.Second))
	if err != nil {
		log.Fatal(err) // a *firecracker.HandshakeError says why
	}
	if err := firecracker.Validate(hs.Mappings, st.Size(), []int{2 << 20}); err != nil {
		log.Fatal(err)
	}
	// The regions must be the peer's own, mapped and registered.
	if cred, err := handoff.PeerCred(c); err == nil {
		if smaps, err := firecracker.ReadSmaps(cred.PID); err == nil {
			if _, err := smaps.Check(hs.Mappings); err != nil {
				log.Fatal(err)
			}
		}
	}
	u, err := uffd.FromFD(hs.FD, 0)
	if err != nil {
		log.Fatal(err)
	}
	defer u.Close()
	for _, m := range hs.Mappings {
		log.Printf("serve %v from %s at %#x", m, memFile, m.Offset)
	}
}
