package comm

import (
	"context"
	"strings"
	"testing"
)

// One rank's collectives are copies (or nothing in place); wrong counts and roots are
// errors; a split stays alone or leaves.
func TestSelf(t *testing.T) {
	ctx := context.Background()
	s := Self(nil)
	if s.Rank() != 0 || s.Size() != 1 {
		t.Fatalf("rank %d of %d", s.Rank(), s.Size())
	}
	ops := map[string]func(send, recv Buffer) error{
		"all-gather":       func(a, b Buffer) error { return s.AllGather(ctx, a, b) },
		"all-gather-v":     func(a, b Buffer) error { return s.AllGatherV(ctx, a, b, []int{a.Len()}) },
		"reduce-scatter":   func(a, b Buffer) error { return s.ReduceScatter(ctx, a, b) },
		"reduce-scatter-v": func(a, b Buffer) error { return s.ReduceScatterV(ctx, a, b, []int{b.Len()}) },
		"all-reduce":       func(a, b Buffer) error { return s.AllReduce(ctx, a, b) },
	}
	for name, op := range ops {
		send, recv := Float32s([]float32{1, 2, 3}), Float32s(make([]float32, 3))
		if err := op(send, recv); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if got := recv.Float32s(); got[0] != 1 || got[1] != 2 || got[2] != 3 {
			t.Errorf("%s: recv %v, want [1 2 3]", name, got)
		}
		if err := op(send, send); err != nil || send.Float32s()[2] != 3 {
			t.Errorf("%s in place: %v, %v", name, err, send.Float32s())
		}
		if err := op(send, Float32s(make([]float32, 2))); err == nil || !strings.Contains(err.Error(), "of one rank") {
			t.Errorf("%s into a shorter buffer: %v", name, err)
		}
	}
	b := Float32s([]float32{1})
	if err := s.AllGatherV(ctx, b, b, []int{1, 0}); err == nil {
		t.Error("all-gather-v with two counts: no error")
	}
	if err := s.Broadcast(ctx, b, 1); err == nil {
		t.Error("broadcast from root 1: no error")
	}
	if err := s.Broadcast(ctx, b, 0); err != nil || s.Barrier(ctx) != nil {
		t.Errorf("broadcast, barrier: %v", err)
	}
	if g, err := s.Split(ctx, -1, 0); g != nil || err != nil {
		t.Errorf("split with no color: %v, %v", g, err)
	}
	if g, err := s.Split(ctx, 3, 0); err != nil || g.Size() != 1 {
		t.Errorf("split: %v, %v", g, err)
	}
	dev := DeviceBuffer(b.DType(), 0x1000, 1, 0)
	if err := s.AllReduce(ctx, dev, DeviceBuffer(b.DType(), 0x2000, 1, 0)); err == nil || !strings.Contains(err.Error(), "cannot copy") {
		t.Errorf("device buffers without a device copier: %v", err)
	}
	if err := s.AllReduce(ctx, b, dev); err == nil || !strings.Contains(err.Error(), "different memories") {
		t.Errorf("host into device: %v", err)
	}
}
