package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/moerun/moerun/comm"
	"github.com/moerun/moerun/rank"
	"github.com/moerun/moerun/rendezvous"
	"github.com/moerun/moerun/worker/progress"
)

// A rank's progress is the collectives it has entered and whether it is inside one. Every
// communicator of a Job counts on the job's tracker (tracked, below), and under the launcher
// a heartbeat goroutine publishes it to the store (package progress), so that the launcher
// can tell a hung job from a busy one and say which ranks wait in which collective.

// The collectives as the launcher names them (the names of worker/timed.go, plus the
// communicator's own set-up).
type opID uint8

const (
	opOpen opID = iota
	opSplit
	opBarrier
	opAllGather
	opAllGatherV
	opReduceScatter
	opReduceScatterV
	opAllReduce
	opBroadcast
)

var collectiveNames = [...]string{"open", "split", "barrier", "all_gather", "all_gather_v", "reduce_scatter", "reduce_scatter_v", "all_reduce", "broadcast"}

// groupID is 0 for the world, 1+i for rank.AllGroupKinds[i].
type groupID uint8

const groupWorld groupID = 0

func groupOf(k rank.GroupKind) groupID {
	for i, kk := range rank.AllGroupKinds {
		if kk == k {
			return groupID(i + 1)
		}
	}
	panic(fmt.Sprintf("worker: group kind %v is not in rank.AllGroupKinds", k))
}

func (g groupID) String() string {
	if g == groupWorld || int(g) > len(rank.AllGroupKinds) {
		return "world"
	}
	return rank.AllGroupKinds[g-1].String()
}

// The tracker's state is one word, so that a collective costs two atomic operations:
// seq<<16 | in<<15 | op<<8 | group.
const (
	seqShift = 16
	inBit    = 1 << 15
)

func pack(seq uint64, in bool, op opID, g groupID) uint64 {
	s := seq<<seqShift | uint64(op)<<8 | uint64(g)
	if in {
		s |= inBit
	}
	return s
}

// tracker counts the collectives of one rank.
type tracker struct {
	state atomic.Uint64
	// watched: the launcher watches this rank's progress (the heartbeat runs), so a wait
	// inside a collective that ends by a deadline is the launcher's to diagnose.
	watched bool
	// hangBefore (a test hook, MOERUN_TEST_HANG) makes the rank block before entering
	// collective #hangBefore, as a rank stuck outside a collective would, whatever the
	// collective's deadline, until hangUntil is closed (the job's context ends: SIGTERM);
	// 0 is off.
	hangBefore uint64
	hangUntil  <-chan struct{}
	// exitBefore and exitCode (a test hook, MOERUN_TEST_EXIT) make the rank exit at once
	// with exitCode before entering collective #exitBefore: a crash mid-job.
	exitBefore uint64
	exitCode   int
	// async: the backend's collectives return once enqueued (NCCL). A rank then waits for
	// them in a device synchronisation, outside the call, so a collective stays "inside"
	// (pending) until the next synchronisation that completes (synced): a rank stuck
	// behind a collective its peer never entered must look like a rank waiting in it.
	async bool
}

// record is the tracker's state as the store gets it (Beat and Closed are the heartbeat's).
func (t *tracker) record() progress.Record {
	s := t.state.Load()
	r := progress.Record{Seq: s >> seqShift, In: s&inBit != 0}
	if r.Seq > 0 {
		op := opID(s >> 8 & 0x7f)
		if int(op) < len(collectiveNames) {
			r.Op = collectiveNames[op]
		}
		r.Group = groupID(s & 0xff).String()
	}
	return r
}

// enter marks the rank inside a new collective and returns the state it stored, for leave.
func (t *tracker) enter(ctx context.Context, op opID, g groupID) (uint64, error) {
	for {
		old := t.state.Load()
		seq := old>>seqShift + 1
		if seq == t.exitBefore {
			fmt.Fprintf(os.Stderr, "worker: test exit %d before collective #%d (%s)\n", t.exitCode, seq, envTestExit)
			os.Exit(t.exitCode)
		}
		if seq == t.hangBefore {
			<-t.hangUntil // hang here until the job is torn down
			return 0, fmt.Errorf("test hang before collective #%d (%s=%s): %w", seq, envTestHang, os.Getenv(envTestHang), context.Canceled)
		}
		now := pack(seq, true, op, g)
		if t.state.CompareAndSwap(old, now) {
			return now, nil
		}
	}
}

// leave marks the collective entered as tok finished when it succeeded — on an async
// backend, pending until synced. A failed one leaves the rank inside it: that is where it
// was waiting. When the launcher watches, a deadline is marked as a waitTimeout, so that
// Main waits for the launcher's diagnosis.
func (t *tracker) leave(tok uint64, err error) error {
	if err == nil && t.async {
		return nil // enqueued: pending until synced
	}
	return t.leaveDone(tok, err)
}

// leaveDone is leave for a call that returns only once it is complete on every backend
// (the world's set-up, a split, a barrier).
func (t *tracker) leaveDone(tok uint64, err error) error {
	if err == nil {
		t.state.CompareAndSwap(tok, tok&^inBit) // unless another goroutine entered one since
		return nil
	}
	if t.watched && (errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded)) {
		return waitTimeout{err}
	}
	return err
}

// synced marks the collectives entered so far complete: the device caught up with them
// (an async backend's pending collective ends here, not when its call returns).
func (t *tracker) synced() {
	for {
		old := t.state.Load()
		if old&inBit == 0 || t.state.CompareAndSwap(old, old&^inBit) {
			return
		}
	}
}

// waitTimeout marks a collective (or the communicator's set-up) that ran out of time while
// the launcher watched this rank: the launcher sees it waiting there and reports who never
// came, so the worker waits to be stopped (see Main) instead of being reported as the first
// failure. Its message is the cause's.
type waitTimeout struct{ error }

func (e waitTimeout) Unwrap() error { return e.error }

// wrap makes c count its collectives on t as collectives on group g.
func (t *tracker) wrap(c comm.Communicator, g groupID) comm.Communicator {
	if c == nil {
		return nil
	}
	return tracked{comm.Intercept(c, t.hook(g)), c, t, g}
}

// tracked is a communicator whose collectives (through comm.Intercept) and splits count on
// a tracker. Split returns the new group untracked: its caller (Join) wraps it under the
// group's own name.
type tracked struct {
	comm.Communicator // intercepted
	raw               comm.Communicator
	t                 *tracker
	group             groupID
}

// Memory and Unwrap reach through to the communicator, as comm.Alias does, so that
// backend-specific callers (device buffers, the GPU ops) still find it.
func (c tracked) Unwrap() comm.Communicator { return c.raw }

// Memory is the communicator's, with Sync marking the pending collectives complete.
func (c tracked) Memory() comm.Memory {
	m := comm.MemoryOf(c.raw)
	if m == nil {
		return nil
	}
	return trackedMemory{m, c.t}
}

type trackedMemory struct {
	comm.Memory
	t *tracker
}

func (m trackedMemory) Sync(ctx context.Context) error {
	err := m.Memory.Sync(ctx)
	if err == nil {
		m.t.synced()
	}
	return err
}

// Download waits for the device too.
func (m trackedMemory) Download(dst, src comm.Buffer) error {
	err := m.Memory.Download(dst, src)
	if err == nil {
		m.t.synced()
	}
	return err
}

// collectiveOps maps comm.Intercept's names to the tracker's.
var collectiveOps = map[string]opID{
	"barrier": opBarrier, "all_gather": opAllGather, "all_gather_v": opAllGatherV, "reduce_scatter": opReduceScatter,
	"reduce_scatter_v": opReduceScatterV, "all_reduce": opAllReduce, "broadcast": opBroadcast,
}

func (t *tracker) hook(g groupID) comm.Hook {
	return func(ctx context.Context, op string, call func(context.Context) error) error {
		tok, err := t.enter(ctx, collectiveOps[op], g)
		if err != nil {
			return err
		}
		if op == "barrier" { // returns once every rank has entered it, on every backend
			return t.leaveDone(tok, call(ctx))
		}
		return t.leave(tok, call(ctx))
	}
}

func (c tracked) Split(ctx context.Context, color, key int) (comm.Communicator, error) {
	tok, err := c.t.enter(ctx, opSplit, c.group)
	if err != nil {
		return nil, err
	}
	sub, err := c.Communicator.Split(ctx, color, key)
	return sub, c.t.leaveDone(tok, err)
}

// heartbeat publishes a tracker's record under the rank's key every period, through a store
// connection of its own (a Wait of the job's client would hold the heartbeat up). Close
// writes a last record marked closed and waits for the goroutine.
type heartbeat struct {
	stop, done chan struct{}
}

// heartbeatWrite bounds one write of the record.
const heartbeatWrite = 2 * time.Second

// recordStore is what the heartbeat needs of its store connection (a *rendezvous.Client).
type recordStore interface {
	Set(ctx context.Context, key string, value []byte) error
	Close() error
}

var _ recordStore = (*rendezvous.Client)(nil)

func startHeartbeat(store recordStore, rank int, period time.Duration, t *tracker, logger *slog.Logger) *heartbeat {
	if logger == nil {
		logger = slog.Default()
	}
	h := &heartbeat{stop: make(chan struct{}), done: make(chan struct{})}
	key := progress.Key(rank)
	var beat uint64
	failed := false
	write := func(closed bool) {
		beat++
		r := t.record()
		r.Beat, r.Closed = beat, closed
		ctx, cancel := context.WithTimeout(context.Background(), max(heartbeatWrite, period))
		defer cancel()
		if err := store.Set(ctx, key, r.Marshal()); err != nil && !failed {
			failed = true // once: the store may be gone with the launcher
			logger.Debug("heartbeat", "rank", rank, "err", err)
		}
	}
	go func() {
		defer close(h.done)
		defer store.Close()
		tick := time.NewTicker(period)
		defer tick.Stop()
		for {
			write(false)
			select {
			case <-h.stop:
				write(true)
				return
			case <-tick.C:
			}
		}
	}()
	return h
}

func (h *heartbeat) Close() {
	close(h.stop)
	<-h.done
}

// envTestHang is a test hook: "RANK:SEQ" makes rank RANK block (until the job is torn
// down) before it enters its collective #SEQ, as a rank stuck outside a collective would.
const envTestHang = "MOERUN_TEST_HANG"

// envTestExit is RANK:SEQ:CODE: rank RANK exits with CODE before collective #SEQ.
const envTestExit = "MOERUN_TEST_EXIT"

// exitHook reads envTestExit's value for rank r: the collective to exit before (0: none)
// and the exit code.
func exitHook(v string, r int) (seq uint64, code int, err error) {
	if v == "" {
		return 0, 0, nil
	}
	f := strings.Split(v, ":")
	if len(f) == 3 {
		who, err1 := strconv.Atoi(f[0])
		s, err2 := strconv.ParseUint(f[1], 10, 64)
		c, err3 := strconv.Atoi(f[2])
		if err1 == nil && err2 == nil && err3 == nil && s > 0 && c >= 0 && c < 256 {
			if who != r {
				return 0, 0, nil
			}
			return s, c, nil
		}
	}
	return 0, 0, fmt.Errorf("%s=%q: expected RANK:SEQ:CODE (SEQ from 1, CODE 0-255)", envTestExit, v)
}

// hangHook reads envTestHang's value for rank r: the collective to hang before, or 0.
func hangHook(v string, r int) (uint64, error) {
	if v == "" {
		return 0, nil
	}
	rs, ss, ok := strings.Cut(v, ":")
	who, err1 := strconv.Atoi(rs)
	seq, err2 := strconv.ParseUint(ss, 10, 64)
	if !ok || err1 != nil || err2 != nil || seq == 0 {
		return 0, fmt.Errorf("%s=%q: expected RANK:SEQ (SEQ from 1)", envTestHang, v)
	}
	if who != r {
		return 0, nil
	}
	return seq, nil
}
