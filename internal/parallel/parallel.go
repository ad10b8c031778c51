// Package parallel splits a range of independent work over the CPUs.
package parallel

import (
	"runtime"
	"sync"
)

// Ranges calls f on contiguous pieces [lo, hi) of [0, n), each on its own goroutine, and
// returns when all are done: at most one piece per CPU (GOMAXPROCS), none shorter than
// minPiece, so a small n is one call on the caller's goroutine.
func Ranges(n, minPiece int, f func(lo, hi int)) {
	pieces := min(runtime.GOMAXPROCS(0), n/max(minPiece, 1))
	if pieces <= 1 {
		f(0, n)
		return
	}
	var wg sync.WaitGroup
	for p := range pieces {
		wg.Go(func() { f(p*n/pieces, (p+1)*n/pieces) }) // each at least n/pieces ≥ minPiece
	}
	wg.Wait()
}
