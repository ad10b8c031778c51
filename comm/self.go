package comm

import (
	"context"
	"fmt"
)

// Self is the group of this rank alone, beside c (a communicator of the same backend and
// device): every collective of one rank is a copy of send into recv, or nothing when they
// are the same buffer. A job whose layout puts every rank in a group of its own (TP 1,
// PCP 1, PP 1) takes it instead of splitting c, which for NCCL would make a communicator
// per group at start-up (12–15 ms each on 2 × H200) for collectives that move nothing.
// Device buffers are copied on c's stream, through its Memory (DeviceCopier).
func Self(c Communicator) Communicator { return self{c} }

// DeviceCopier is a Memory that copies between its device buffers in order with the
// communicator's collectives (enqueued, as they are).
type DeviceCopier interface {
	CopyDevice(dst, src Buffer) error
}

type self struct{ parent Communicator }

func (self) Rank() int { return 0 }
func (self) Size() int { return 1 }

func (s self) copy(op string, send, recv Buffer) error {
	if send.Len() != recv.Len() || send.DType() != recv.DType() {
		return fmt.Errorf("comm: %s of one rank: send %v and recv %v differ", op, send, recv)
	}
	if send.OnDevice() != recv.OnDevice() {
		return fmt.Errorf("comm: %s of one rank: send %v and recv %v are in different memories", op, send, recv)
	}
	if !send.OnDevice() {
		copy(recv.Host(), send.Host())
		return nil
	}
	if send.Ptr() == recv.Ptr() {
		return nil
	}
	dc, ok := MemoryOf(s.parent).(DeviceCopier)
	if !ok {
		return fmt.Errorf("comm: %s of one rank on device buffers: the backend's memory cannot copy them", op)
	}
	return dc.CopyDevice(recv, send)
}

func (s self) AllGather(_ context.Context, send, recv Buffer) error {
	return s.copy("all-gather", send, recv)
}

func (s self) AllGatherV(_ context.Context, send, recv Buffer, counts []int) error {
	if len(counts) != 1 || counts[0] != send.Len() {
		return fmt.Errorf("comm: all-gather-v of one rank with counts %v for %d elements", counts, send.Len())
	}
	return s.copy("all-gather-v", send, recv)
}

func (s self) ReduceScatter(_ context.Context, send, recv Buffer) error {
	return s.copy("reduce-scatter", send, recv)
}

func (s self) ReduceScatterV(_ context.Context, send, recv Buffer, counts []int) error {
	if len(counts) != 1 || counts[0] != recv.Len() {
		return fmt.Errorf("comm: reduce-scatter-v of one rank with counts %v for %d elements", counts, recv.Len())
	}
	return s.copy("reduce-scatter-v", send, recv)
}

func (s self) AllReduce(_ context.Context, send, recv Buffer) error {
	return s.copy("all-reduce", send, recv)
}

func (s self) Broadcast(_ context.Context, buf Buffer, root int) error {
	if root != 0 {
		return fmt.Errorf("comm: broadcast of one rank from root %d", root)
	}
	return nil
}

func (self) Barrier(context.Context) error { return nil }

func (s self) Split(_ context.Context, color, _ int) (Communicator, error) {
	if color < 0 {
		return nil, nil
	}
	return s, nil
}

func (self) Close() error { return nil }

// Memory and Unwrap reach through to the parent, whose device and stream serve this group.
func (s self) Memory() Memory       { return MemoryOf(s.parent) }
func (s self) Unwrap() Communicator { return s.parent }
