//go:build linux

package handler_test

import (
	"flag"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/gouffd/uffd/firecracker/fctest"
	"github.com/gouffd/uffd/firecracker/handler"
	"github.com/gouffd/uffd/pager"
)

var (
	benchMiB  = flag.Int("fc.mib", 64, "guest size of BenchmarkTouchAll, in MiB (the README's figures use 1024)")
	benchSpin = flag.Duration("fc.spin", -1, "BenchmarkTouchAll: the engine's EngineConfig.Spin (0: readers never spin; -1: the daemon's default for each mode, DaemonConfig.Spin)")
)

// BenchmarkTouchAll times a test VM (another process) touching every page
// of its guest once, writing one byte per 4 KiB page as ref_handler.c
// does, in address order and in ref_handler's random order, in each mode.
// It reports the median time of a whole pass (ms/pass) and per page
// (ns/page); compare with `ref_handler -s MiB -r 3` (and -x).
//
//	go test -run '^$' -bench TouchAll -benchtime 3x ./firecracker/handler -args -fc.mib=1024
func BenchmarkTouchAll(b *testing.B) {
	size := *benchMiB << 20

	dir := sockDir(b)
	path, data := memFile(b, dir, size)
	f, err := pager.OpenFile(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	for _, mode := range []struct {
		name string
		cfg  handler.Config
	}{
		{"on-demand", handler.Config{Prefetch: pager.Adaptive()}},
		{"on-demand-4KiB", handler.Config{}},
		{"prefault", handler.Config{Mode: handler.Prefault, Prefetch: pager.Adaptive()}},
		{"record-replay", handler.Config{Mode: handler.RecordReplay, Prefetch: pager.Adaptive()}},
	} {
		for _, order := range []string{"seq-write", "random-write"} {
			b.Run(mode.name+"/"+order, func(b *testing.B) {
				cfg := mode.cfg
				spin := *benchSpin
				switch {
				case spin == 0:
					spin = -1 // never
				case spin < 0 && cfg.Mode != handler.OnDemand:
					spin = -1 // the daemon's default (DaemonConfig.Spin)
				case spin < 0:
					spin = 0 // DefaultSpin
				}
				eng, err := pager.NewEngine(pager.EngineConfig{Spin: spin})
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { // after the daemon's own cleanup, registered later
					if err := eng.Close(); err != nil {
						b.Errorf("engine Close: %v", err)
					}
				})
				cfg.Engine = eng
				if cfg.Mode == handler.RecordReplay {
					cfg.Trace = filepath.Join(b.TempDir(), "trace")
				}
				d := startDaemonOn(b, sockDir(b), path, data, f, cfg)
				vm := fctest.Config{Regions: []fctest.Region{{Size: uint64(size)}}, Touch: []string{order}}
				if cfg.Mode == handler.RecordReplay {
					// The recording restore, not timed.
					d.startVM(vm).wait(b)
					d.waitIdle(b)
				}
				var runs []time.Duration
				for b.Loop() {
					res := d.startVM(vm).wait(b)
					runs = append(runs, time.Duration(res.Passes[0].Ns))
					d.waitIdle(b)
				}
				slices.Sort(runs)
				med := runs[len(runs)/2]
				b.ReportMetric(float64(med.Microseconds())/1e3, "ms/pass")
				b.ReportMetric(float64(med.Nanoseconds())/float64(size/4096), "ns/page")
				b.Logf("%s %s: runs %v", mode.name, order, runs)
			})
		}
	}
}
