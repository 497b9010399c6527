package pager

import (
	"math/bits"
	"sync/atomic"
)

// bitmap is a set of page indexes, safe for concurrent use: every word is
// read and written atomically.
type bitmap []uint64

func newBitmap(n int) bitmap { return make(bitmap, (n+63)/64) }

func (b bitmap) get(i int) bool {
	return atomic.LoadUint64(&b[i>>6])&(1<<(uint(i)&63)) != 0
}

// mask returns the bits [bit, bit+n) of a word, n in 1..64-bit.
func mask(bit, n int) uint64 {
	if n >= 64 {
		return ^uint64(0)
	}
	return (uint64(1)<<uint(n) - 1) << uint(bit)
}

// setRange sets [i, i+n).
func (b bitmap) setRange(i, n int) {
	for n > 0 {
		bit := i & 63
		k := min(64-bit, n)
		atomic.OrUint64(&b[i>>6], mask(bit, k))
		i, n = i+k, n-k
	}
}

// clearRange clears [i, i+n).
func (b bitmap) clearRange(i, n int) {
	for n > 0 {
		bit := i & 63
		k := min(64-bit, n)
		atomic.AndUint64(&b[i>>6], ^mask(bit, k))
		i, n = i+k, n-k
	}
}

// claim sets the clear bits [i, i+k) for the largest k <= max such that
// all of them were clear, and returns k: 0 when bit i was already set.
func (b bitmap) claim(i, max int) int {
	n := 0
	for n < max {
		j := i + n
		w, bit := j>>6, j&63
		span := min(64-bit, max-n)
		for {
			old := atomic.LoadUint64(&b[w])
			run := bits.TrailingZeros64(old >> uint(bit)) // clear bits from bit on
			if bit+run > 64 {
				run = 64 - bit
			}
			run = min(run, span)
			if run == 0 {
				return n
			}
			if atomic.CompareAndSwapUint64(&b[w], old, old|mask(bit, run)) {
				n += run
				if run < span {
					return n
				}
				break
			}
		}
	}
	return n
}

// claimBack claims clear bits going down from i-1 to lo, stopping at the
// first set bit, and returns how many it claimed.
func (b bitmap) claimBack(i, lo int) int {
	n := 0
	for j := i - 1; j >= lo; j-- {
		w, m := j>>6, uint64(1)<<(uint(j)&63)
		for {
			old := atomic.LoadUint64(&b[w])
			if old&m != 0 {
				return n
			}
			if atomic.CompareAndSwapUint64(&b[w], old, old|m) {
				break
			}
		}
		n++
	}
	return n
}

// run returns the length of the run of bits equal to v from i, at most n.
func (b bitmap) run(i, n int, v bool) int {
	k := 0
	for k < n {
		j := i + k
		w := atomic.LoadUint64(&b[j>>6])
		if v {
			w = ^w
		}
		bit := j & 63
		r := bits.TrailingZeros64(w >> uint(bit))
		if bit+r > 64 {
			r = 64 - bit
		}
		if r == 0 {
			return k
		}
		k += r
		if bit+r < 64 {
			break
		}
	}
	return min(k, n)
}

// clone copies b.
func (b bitmap) clone() bitmap {
	c := make(bitmap, len(b))
	for i := range b {
		c[i] = atomic.LoadUint64(&b[i])
	}
	return c
}
