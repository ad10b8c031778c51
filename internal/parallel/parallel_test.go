package parallel

import (
	"runtime"
	"sync"
	"testing"
)

// Every index is visited once, whatever the piece size; small ranges are one call.
func TestRanges(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(4))
	for _, c := range []struct{ n, minPiece, maxCalls int }{
		{0, 1, 1}, {5, 10, 1}, {10, 3, 3}, {1000, 1, 4}, {1001, 100, 4}, {7, 0, 4},
	} {
		seen := make([]int, c.n)
		var mu sync.Mutex
		calls := 0
		Ranges(c.n, c.minPiece, func(lo, hi int) {
			mu.Lock()
			calls++
			mu.Unlock()
			if hi-lo < min(c.minPiece, c.n) {
				t.Errorf("n %d, minPiece %d: piece [%d, %d) too short", c.n, c.minPiece, lo, hi)
			}
			for i := lo; i < hi; i++ {
				seen[i]++
			}
		})
		if calls < 1 || calls > c.maxCalls {
			t.Errorf("n %d, minPiece %d: %d calls, want 1..%d", c.n, c.minPiece, calls, c.maxCalls)
		}
		for i, s := range seen {
			if s != 1 {
				t.Fatalf("n %d, minPiece %d: index %d visited %d times", c.n, c.minPiece, i, s)
			}
		}
	}
}
