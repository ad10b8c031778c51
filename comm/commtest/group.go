package commtest

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/moerun/moerun/comm"
)

// RunGroup opens a group of size ranks in this process (one goroutine each, sharing one
// MemStore), runs fn on every rank, then closes the communicators. It returns the errors
// of all ranks, joined and tagged by rank.
func RunGroup(ctx context.Context, open comm.OpenFunc, size int, fn func(ctx context.Context, c comm.Communicator) error) error {
	store := NewMemStore()
	errs := make([]error, size)
	var wg sync.WaitGroup
	for r := 0; r < size; r++ {
		wg.Go(func() {
			// Device r: a GPU backend in one process needs one GPU per rank.
			c, err := open(ctx, comm.Config{Rank: r, Size: size, Store: store, Namespace: "test", Device: r})
			if err != nil {
				errs[r] = fmt.Errorf("rank %d: open: %w", r, err)
				return
			}
			c = comm.Checked(c)
			defer c.Close()
			if err := fn(ctx, c); err != nil && !errors.Is(err, errSkipHost) {
				errs[r] = fmt.Errorf("rank %d: %w", r, err)
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}
