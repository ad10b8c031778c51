package worker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"testing"
	"testing/synctest"
	"time"

	"github.com/moerun/moerun/comm"
	"github.com/moerun/moerun/rank"
	"github.com/moerun/moerun/worker/progress"
)

// fakeComm is a communicator whose collectives return err, and which records, when a
// collective runs, what its tracker says.
type fakeComm struct {
	err    error
	t      *tracker
	during []progress.Record
}

func (f *fakeComm) call() error {
	if f.t != nil {
		f.during = append(f.during, f.t.record())
	}
	return f.err
}

func (f *fakeComm) Rank() int { return 0 }
func (f *fakeComm) Size() int { return 2 }
func (f *fakeComm) AllGather(context.Context, comm.Buffer, comm.Buffer) error {
	return f.call()
}
func (f *fakeComm) AllGatherV(context.Context, comm.Buffer, comm.Buffer, []int) error {
	return f.call()
}
func (f *fakeComm) ReduceScatter(context.Context, comm.Buffer, comm.Buffer) error {
	return f.call()
}
func (f *fakeComm) ReduceScatterV(context.Context, comm.Buffer, comm.Buffer, []int) error {
	return f.call()
}
func (f *fakeComm) AllReduce(context.Context, comm.Buffer, comm.Buffer) error { return f.call() }
func (f *fakeComm) Broadcast(context.Context, comm.Buffer, int) error         { return f.call() }
func (f *fakeComm) Barrier(context.Context) error                             { return f.call() }
func (f *fakeComm) Split(context.Context, int, int) (comm.Communicator, error) {
	return &fakeComm{}, f.call()
}
func (f *fakeComm) Close() error { return nil }

func TestTrackerCountsCollectives(t *testing.T) {
	ctx := context.Background()
	tr := &tracker{}
	f := &fakeComm{t: tr}
	dp := tr.wrap(f, groupOf(rank.DP))
	world := tr.wrap(f, groupWorld)
	buf := comm.Float32s(make([]float32, 2))
	calls := []func() error{
		func() error { return world.Barrier(ctx) },
		func() error { return dp.AllGather(ctx, buf, buf) },
		func() error { return dp.AllGatherV(ctx, buf, buf, []int{1, 1}) },
		func() error { return dp.ReduceScatter(ctx, buf, buf) },
		func() error { return dp.ReduceScatterV(ctx, buf, buf, []int{1, 1}) },
		func() error { return world.AllReduce(ctx, buf, buf) },
		func() error { return world.Broadcast(ctx, buf, 0) },
		func() error { _, err := world.Split(ctx, 0, 0); return err },
	}
	for _, c := range calls {
		if err := c(); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{"#1 barrier on world", "#2 all_gather on dp", "#3 all_gather_v on dp", "#4 reduce_scatter on dp",
		"#5 reduce_scatter_v on dp", "#6 all_reduce on world", "#7 broadcast on world", "#8 split on world"}
	if len(f.during) != len(want) {
		t.Fatalf("%d calls recorded, want %d", len(f.during), len(want))
	}
	for i, r := range f.during {
		if !r.In || r.Where() != want[i] {
			t.Errorf("during call %d the tracker says %+v (%s), want inside %s", i+1, r, r.Where(), want[i])
		}
	}
	if r := tr.record(); r.In || r.Seq != 8 || r.Where() != "#8 split on world" {
		t.Errorf("after the calls: %+v, want #8 finished", r)
	}
}

func TestTrackerFailedCollective(t *testing.T) {
	ctx := context.Background()
	buf := comm.Float32s(make([]float32, 1))
	deadline := fmt.Errorf("ring: %w", os.ErrDeadlineExceeded)
	for _, tc := range []struct {
		watched bool
		err     error
		marked  bool
	}{
		{false, deadline, false},
		{true, deadline, true},
		{true, fmt.Errorf("store: %w", context.DeadlineExceeded), true},
		{true, comm.ErrPeerLost, false},
		{true, context.Canceled, false},
	} {
		tr := &tracker{watched: tc.watched}
		err := tr.wrap(&fakeComm{err: tc.err}, groupOf(rank.TP)).AllReduce(ctx, buf, buf)
		if !errors.Is(err, tc.err) || err.Error() != tc.err.Error() {
			t.Errorf("watched %v, %v: got %v, want the same error", tc.watched, tc.err, err)
		}
		var wt waitTimeout
		if errors.As(err, &wt) != tc.marked {
			t.Errorf("watched %v, %v: marked as a wait timeout: %v, want %v", tc.watched, tc.err, !tc.marked, tc.marked)
		}
		// A failed collective leaves the rank where it was waiting.
		if r := tr.record(); !r.In || r.Where() != "#1 all_reduce on tp" {
			t.Errorf("after a failure: %+v, want inside #1 all_reduce on tp", r)
		}
	}
}

func TestTrackerReachesThrough(t *testing.T) {
	inner := &fakeComm{}
	c := (&tracker{}).wrap(comm.Alias(inner), groupOf(rank.EP))
	u, ok := c.(interface{ Unwrap() comm.Communicator })
	if !ok {
		t.Fatal("a tracked communicator has no Unwrap")
	}
	if uu := u.Unwrap().(interface{ Unwrap() comm.Communicator }).Unwrap(); uu != comm.Communicator(inner) {
		t.Errorf("Unwrap chain ends at %v, want the backend's communicator", uu)
	}
	if comm.MemoryOf(c) != nil {
		t.Errorf("a host communicator has a memory through the wrapper")
	}
}

func TestHangHook(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		job, cancel := context.WithCancel(context.Background())
		tr := &tracker{hangBefore: 2, hangUntil: job.Done()}
		c := tr.wrap(&fakeComm{}, groupWorld)
		if err := c.Barrier(job); err != nil {
			t.Fatal(err)
		}
		// The hook outlasts the collective's own deadline, as a stuck rank would.
		ctx, stop := context.WithTimeout(job, time.Second)
		defer stop()
		done := make(chan error, 1)
		go func() { done <- c.Barrier(ctx) }()
		time.Sleep(time.Hour) // fake time, in the bubble
		synctest.Wait()
		select {
		case err := <-done:
			t.Fatalf("the hooked collective returned %v before the job was stopped", err)
		default:
		}
		if r := tr.record(); r.In || r.Seq != 1 {
			t.Errorf("hanging before #2: %+v, want #1 finished", r)
		}
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("after cancel: %v", err)
		}
	})

	for _, tc := range []struct {
		v    string
		rank int
		want uint64
		bad  bool
	}{{"", 0, 0, false}, {"2:17", 2, 17, false}, {"2:17", 1, 0, false}, {"x", 0, 0, true}, {"1:0", 1, 0, true}, {"1:", 1, 0, true}} {
		got, err := hangHook(tc.v, tc.rank)
		if got != tc.want || (err != nil) != tc.bad {
			t.Errorf("hangHook(%q, %d) = %d, %v", tc.v, tc.rank, got, err)
		}
	}
}

func TestProgressOptions(t *testing.T) {
	env := map[string]string{progress.EnvHeartbeat: "250ms", envTestHang: "3:9"}
	opts, err := progressOptions(func(k string) string { return env[k] }, 3)
	if err != nil {
		t.Fatal(err)
	}
	var o joinOptions
	for _, opt := range opts {
		opt(&o)
	}
	if o.heartbeat != 250*time.Millisecond || o.hangBefore != 9 {
		t.Errorf("options %+v", o)
	}
	env[progress.EnvHeartbeat] = "soon"
	var ue usageError
	if _, err := progressOptions(func(k string) string { return env[k] }, 3); !errors.As(err, &ue) {
		t.Errorf("bad %s: %v, want a usage error", progress.EnvHeartbeat, err)
	}
}

// fakeStore hands every Set to the test.
type fakeStore struct {
	sets   chan string
	closed chan struct{}
}

func (f *fakeStore) Set(_ context.Context, key string, value []byte) error {
	f.sets <- key + " " + string(value)
	return nil
}

func (f *fakeStore) Close() error { close(f.closed); return nil }

func TestHeartbeat(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := t.Context()
		tr := &tracker{watched: true}
		c := tr.wrap(&fakeComm{}, groupOf(rank.DP))
		buf := comm.Float32s(make([]float32, 1))
		c.AllReduce(ctx, buf, buf)
		tr.enter(ctx, opAllGatherV, groupOf(rank.DP)) // inside #2 from now on
		store := &fakeStore{sets: make(chan string, 10), closed: make(chan struct{})}
		start := time.Now()
		h := startHeartbeat(store, 5, time.Second, tr, nil)
		for beat := 1; beat <= 3; beat++ {
			got := <-store.sets
			want := fmt.Sprintf("moerun/progress/5 beat=%d seq=2 in=1 op=all_gather_v group=dp", beat)
			if got != want {
				t.Errorf("set %q, want %q", got, want)
			}
			if at, want := time.Since(start), time.Duration(beat-1)*time.Second; at != want {
				t.Errorf("beat %d at %v, want %v", beat, at, want)
			}
		}
		synctest.Wait()
		tr.leave(tr.state.Load(), nil)
		go h.Close()
		if got, want := <-store.sets, "moerun/progress/5 beat=4 seq=2 in=0 op=all_gather_v group=dp closed"; got != want {
			t.Errorf("last set %q, want %q", got, want)
		}
		<-store.closed
	})
}

// MOERUN_TEST_EXIT reads RANK:SEQ:CODE for one rank, and refuses anything else.
func TestExitHook(t *testing.T) {
	for _, tc := range []struct {
		v          string
		rank       int
		seq        uint64
		code       int
		shouldFail bool
	}{
		{"", 0, 0, 0, false},
		{"3:5:7", 3, 5, 7, false},
		{"3:5:7", 2, 0, 0, false},
		{"3:0:7", 3, 0, 0, true},
		{"3:5", 3, 0, 0, true},
		{"3:5:256", 3, 0, 0, true},
		{"x:5:7", 3, 0, 0, true},
	} {
		seq, code, err := exitHook(tc.v, tc.rank)
		if seq != tc.seq || code != tc.code || (err != nil) != tc.shouldFail {
			t.Errorf("exitHook(%q, %d) = %d, %d, %v", tc.v, tc.rank, seq, code, err)
		}
	}
}

// On an async backend a collective stays pending (inside) after its call returns, until a
// synchronisation completes; on a synchronous one it ends with the call.
func TestTrackerAsyncPending(t *testing.T) {
	for _, async := range []bool{false, true} {
		tr := &tracker{async: async}
		tok, err := tr.enter(context.Background(), opAllGather, groupWorld)
		if err != nil {
			t.Fatal(err)
		}
		if err := tr.leave(tok, nil); err != nil {
			t.Fatal(err)
		}
		if r := tr.record(); r.In != async || r.Seq != 1 || r.Op != "all_gather" {
			t.Errorf("async %v: after the call %+v, want inside = %v", async, r, async)
		}
		tr.synced()
		if r := tr.record(); r.In || r.Seq != 1 {
			t.Errorf("async %v: after a sync %+v, want outside collective #1", async, r)
		}
		// A barrier (and a split, the set-up) is complete when its call returns.
		hook := tr.hook(groupWorld)
		if err := hook(context.Background(), "barrier", func(context.Context) error { return nil }); err != nil {
			t.Fatal(err)
		}
		if r := tr.record(); r.In || r.Seq != 2 || r.Op != "barrier" {
			t.Errorf("async %v: after a barrier %+v, want outside #2", async, r)
		}
	}
}
