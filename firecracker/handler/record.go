//go:build linux

package handler

import (
	"slices"
	"sync"

	"github.com/gouffd/uffd/firecracker"
)

// recorder collects the file offsets of a VM's faults in order.
type recorder struct {
	maps []firecracker.Mapping // by address
	mu   sync.Mutex
	offs []uint64
	done bool
}

func (r *recorder) add(addr uintptr) {
	a := uint64(addr)
	i, found := slices.BinarySearchFunc(r.maps, a, func(m firecracker.Mapping, a uint64) int {
		switch {
		case m.End() <= a:
			return -1
		case m.BaseHostVirtAddr > a:
			return 1
		}
		return 0
	})
	if !found {
		return
	}
	off := r.maps[i].Offset + (a - r.maps[i].BaseHostVirtAddr)
	r.mu.Lock()
	if !r.done {
		r.offs = append(r.offs, off)
	}
	r.mu.Unlock()
}

// endRecording stops v's recording, writing the trace when save is set
// and anything was recorded.
func (s *Server) endRecording(v *vm, save bool) {
	r := v.rec
	if r == nil {
		return
	}
	r.mu.Lock()
	if r.done {
		r.mu.Unlock()
		return
	}
	r.done = true
	offs := r.offs
	r.offs = nil
	r.mu.Unlock()
	if !save || len(offs) == 0 {
		s.traceMu.Lock()
		s.recording = false
		s.traceMu.Unlock()
		return
	}
	t := &Trace{Size: s.cfg.Memory.Size(), Fingerprint: s.fingerprint, Offsets: offs}
	err := WriteTrace(s.cfg.Trace, t)
	s.traceMu.Lock()
	s.recording = false
	if err == nil {
		s.replay = t
	}
	s.traceMu.Unlock()
	if err != nil {
		v.log.Error("writing the trace", "trace", s.cfg.Trace, "err", err)
		return
	}
	v.log.Info("trace written: later VMs replay it", "trace", s.cfg.Trace, "pages", len(offs))
}
