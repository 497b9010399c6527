package pager

import (
	"fmt"
	"slices"
	"sync"
	"time"
)

// Engine is a set of threads that serve page faults, one reader and one
// background worker pinned to each of its CPUs. The readers wait in the
// kernel on every userfaultfd they serve and resolve each fault they read
// on the spot, so that a fault is read on the CPU that raised it; workers
// resolve prefetch windows ahead of a faulting thread on another CPU. The
// threads are not Go's: they run C, never call Go, need no P of the Go
// scheduler, and go on serving while a garbage collection stops the world
// (see the package documentation). Idle, they use no CPU.
//
// Pagers may share an Engine (Config.Engine): the thread count grows with
// the CPUs, not with the userfaultfds served.
//
// While faults keep coming, a reader with nothing to read spins for a
// while (EngineConfig.Spin) before it blocks: it polls without waiting and
// yields its CPU to any thread that wants it, and a fault raised beside it
// is then read without a wake-up. Waking a reader that sleeps on an idle
// CPU is the largest cost of a fault on a virtual machine (an interrupt
// into a halted vCPU, paid by the faulting thread), and the kernel wakes
// every reader waiting on a userfaultfd for each message. The price is CPU
// time: during a stream of faults, the engine's CPUs that no faulting
// thread uses run their spinning reader instead of idling.
type Engine struct {
	mu     sync.Mutex
	cpus   []int
	spin   time.Duration
	users  int
	closed bool
	sys    *sysEngine
}

// EngineConfig holds an Engine's options.
type EngineConfig struct {
	// CPUs the engine runs on, a reader and a worker pinned to each. Nil:
	// every CPU the process may run on (sched_getaffinity of its main
	// thread, so taskset and cpusets are honoured). Fewer CPUs than the
	// faulting threads use serve slower: a fault read on another CPU than
	// the one that raised it waits for a wake-up across CPUs.
	CPUs []int
	// Spin is how long after the engine last read a message its readers
	// keep looking for the next one without sleeping, yielding their CPU
	// to any other thread, before they block in the kernel. Zero:
	// DefaultSpin. Negative: readers never spin; each waits in the
	// kernel as soon as it has nothing to read, using no CPU between
	// faults, and every fault wakes every reader.
	Spin time.Duration
}

// DefaultSpin is EngineConfig.Spin's default: a few times the interval
// between the faults of a thread that does nothing else, so that readers
// spin through a stream of faults and block soon after it ends.
const DefaultSpin = 50 * time.Microsecond

// NewEngine starts an engine.
func NewEngine(cfg EngineConfig) (*Engine, error) {
	allowed, err := AllowedCPUs()
	if err != nil {
		return nil, err
	}
	cpus := slices.Clone(cfg.CPUs)
	if cpus == nil {
		cpus = allowed
	}
	if len(cpus) == 0 {
		return nil, fmt.Errorf("pager: engine: no CPUs")
	}
	seen := map[int]bool{}
	for _, c := range cpus {
		switch {
		case seen[c]:
			return nil, fmt.Errorf("pager: engine: CPU %d named twice", c)
		case !slices.Contains(allowed, c):
			return nil, fmt.Errorf("pager: engine: CPU %d is not one this process may run on (%v)", c, allowed)
		}
		seen[c] = true
	}
	spin := cfg.Spin
	switch {
	case spin == 0:
		spin = DefaultSpin
	case spin < 0:
		spin = 0
	}
	e := &Engine{cpus: cpus, spin: spin}
	if err := e.start(); err != nil {
		return nil, err
	}
	return e, nil
}

// CPUs returns the CPUs the engine runs on.
func (e *Engine) CPUs() []int { return slices.Clone(e.cpus) }

// Spin returns how long its readers spin after the last fault; 0 when
// they never do.
func (e *Engine) Spin() time.Duration { return e.spin }

// Close stops the engine's threads. Every Serve that uses it must have
// returned.
func (e *Engine) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil
	}
	if e.users > 0 {
		return fmt.Errorf("pager: engine: Close with %d pagers serving", e.users)
	}
	e.closed = true
	e.stop()
	return nil
}
