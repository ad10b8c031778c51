package worker

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/moerun/moerun/comm"
)

// commClock adds up the wall time spent inside collectives, for the "comm %" column.
type commClock struct{ ns atomic.Int64 }

func (k *commClock) Elapsed() time.Duration { return time.Duration(k.ns.Load()) }
func (k *commClock) Reset()                 { k.ns.Store(0) }

// timed wraps a communicator so that its collectives count on clock.
type timed struct {
	comm.Communicator
	clock *commClock
}

func (k *commClock) wrap(c comm.Communicator) comm.Communicator { return timed{c, k} }

func (t timed) track(start time.Time) { t.clock.ns.Add(int64(time.Since(start))) }

func (t timed) AllGather(ctx context.Context, send, recv comm.Buffer) error {
	defer t.track(time.Now())
	return t.Communicator.AllGather(ctx, send, recv)
}

func (t timed) AllGatherV(ctx context.Context, send, recv comm.Buffer, counts []int) error {
	defer t.track(time.Now())
	return t.Communicator.AllGatherV(ctx, send, recv, counts)
}

func (t timed) ReduceScatter(ctx context.Context, send, recv comm.Buffer) error {
	defer t.track(time.Now())
	return t.Communicator.ReduceScatter(ctx, send, recv)
}

func (t timed) ReduceScatterV(ctx context.Context, send, recv comm.Buffer, counts []int) error {
	defer t.track(time.Now())
	return t.Communicator.ReduceScatterV(ctx, send, recv, counts)
}

func (t timed) AllReduce(ctx context.Context, send, recv comm.Buffer) error {
	defer t.track(time.Now())
	return t.Communicator.AllReduce(ctx, send, recv)
}

func (t timed) Broadcast(ctx context.Context, buf comm.Buffer, root int) error {
	defer t.track(time.Now())
	return t.Communicator.Broadcast(ctx, buf, root)
}
