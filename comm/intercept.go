package comm

import "context"

// Hook runs one collective of an intercepted communicator: op names it ("all_gather",
// "all_gather_v", "reduce_scatter", "reduce_scatter_v", "all_reduce", "broadcast",
// "barrier"), call performs it. A hook acts around call (times it, records it for a
// replay, marks the rank's progress) and returns call's error or its own.
type Hook func(ctx context.Context, op string, call func(context.Context) error) error

// Intercept returns c with every collective, Barrier included, run through hook; Split
// and Close pass through. Memory and Unwrap reach c, so that backend-specific callers
// still find it.
func Intercept(c Communicator, hook Hook) Communicator { return intercepted{c, hook} }

type intercepted struct {
	Communicator
	hook Hook
}

func (c intercepted) Memory() Memory       { return MemoryOf(c.Communicator) }
func (c intercepted) Unwrap() Communicator { return c.Communicator }

func (c intercepted) AllGather(ctx context.Context, send, recv Buffer) error {
	return c.hook(ctx, "all_gather", func(ctx context.Context) error { return c.Communicator.AllGather(ctx, send, recv) })
}

func (c intercepted) AllGatherV(ctx context.Context, send, recv Buffer, counts []int) error {
	counts = append([]int(nil), counts...) // the call may outlive the caller's slice (a replay)
	return c.hook(ctx, "all_gather_v", func(ctx context.Context) error { return c.Communicator.AllGatherV(ctx, send, recv, counts) })
}

func (c intercepted) ReduceScatter(ctx context.Context, send, recv Buffer) error {
	return c.hook(ctx, "reduce_scatter", func(ctx context.Context) error { return c.Communicator.ReduceScatter(ctx, send, recv) })
}

func (c intercepted) ReduceScatterV(ctx context.Context, send, recv Buffer, counts []int) error {
	counts = append([]int(nil), counts...)
	return c.hook(ctx, "reduce_scatter_v", func(ctx context.Context) error { return c.Communicator.ReduceScatterV(ctx, send, recv, counts) })
}

func (c intercepted) AllReduce(ctx context.Context, send, recv Buffer) error {
	return c.hook(ctx, "all_reduce", func(ctx context.Context) error { return c.Communicator.AllReduce(ctx, send, recv) })
}

func (c intercepted) Broadcast(ctx context.Context, buf Buffer, root int) error {
	return c.hook(ctx, "broadcast", func(ctx context.Context) error { return c.Communicator.Broadcast(ctx, buf, root) })
}

func (c intercepted) Barrier(ctx context.Context) error {
	return c.hook(ctx, "barrier", func(ctx context.Context) error { return c.Communicator.Barrier(ctx) })
}
