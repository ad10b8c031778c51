package worker

import (
	"context"
	"fmt"
	"time"

	"github.com/moerun/moerun/comm"
	"github.com/moerun/moerun/moe/gpu"
)

// stopwatch marks points in the order work runs on the device and reads the time between
// two marks once the device has reached them (after ops.Sync): CUDA events on a GPU, the
// wall clock on the CPU, where every call has finished when it returns.
type stopwatch interface {
	Mark() (int, error)
	Seconds(a, b int) (float64, error)
	Reset()
	Close()
}

type wallWatch struct{ t []time.Time }

func (w *wallWatch) Mark() (int, error) { w.t = append(w.t, time.Now()); return len(w.t) - 1, nil }
func (w *wallWatch) Reset()             { w.t = w.t[:0] }
func (w *wallWatch) Close()             {}
func (w *wallWatch) Seconds(a, b int) (float64, error) {
	if a < 0 || b < 0 || a >= len(w.t) || b >= len(w.t) {
		return 0, fmt.Errorf("stopwatch marks %d and %d of %d", a, b, len(w.t))
	}
	return w.t[b].Sub(w.t[a]).Seconds(), nil
}

// newStopwatch times ops's device.
func newStopwatch(ops any) stopwatch {
	if g, ok := ops.(*gpu.Ops); ok {
		return g.NewStopwatch()
	}
	return &wallWatch{}
}

// commClock marks the start and end of every collective that goes through the
// communicators it wraps, for the time a forward pass spends in collectives; while
// recording, it also keeps each call so that the same collectives can be replayed alone
// (the bound's communication term).
type commClock struct {
	watch     stopwatch
	spans     [][2]int
	names     []string // the collective of each span (while recording)
	recording bool
	calls     []func(context.Context) error
	// paused: no marks (while a CUDA graph is being captured: events recorded then would
	// not be recorded again when the graph replays).
	paused bool
}

// Reset forgets the spans (and the watch's marks: the caller's marks go with them).
func (k *commClock) Reset() { k.spans, k.names = k.spans[:0], k.names[:0]; k.watch.Reset() }

// Elapsed is the device time inside collectives since Reset (after a sync).
func (k *commClock) Elapsed() (float64, error) {
	total := 0.0
	for _, s := range k.spans {
		d, err := k.watch.Seconds(s[0], s[1])
		if err != nil {
			return 0, err
		}
		total += d
	}
	return total, nil
}

// Record starts keeping the calls (forgetting earlier ones), or stops.
func (k *commClock) Record(on bool) {
	k.recording = on
	if on {
		k.calls = k.calls[:0]
	}
}

// Replay runs the recorded collectives again, in order, untimed by the clock.
func (k *commClock) Replay(ctx context.Context) error {
	for i, c := range k.calls {
		if err := c(ctx); err != nil {
			return fmt.Errorf("replayed collective %d of %d: %w", i+1, len(k.calls), err)
		}
	}
	return nil
}

// wrap makes c's collectives count on the clock (Barrier excepted: it is no part of a
// forward pass).
func (k *commClock) wrap(c comm.Communicator) comm.Communicator { return comm.Intercept(c, k.hook) }

// hook runs one collective between two marks, and keeps it (and its name) for Replay while
// recording.
func (k *commClock) hook(ctx context.Context, name string, call func(context.Context) error) error {
	if name == "barrier" {
		return call(ctx)
	}
	if k.recording {
		k.calls = append(k.calls, call)
		k.names = append(k.names, name)
	}
	if k.paused {
		return call(ctx)
	}
	a, err := k.watch.Mark()
	if err != nil {
		return err
	}
	if err := call(ctx); err != nil {
		return err
	}
	b, err := k.watch.Mark()
	if err != nil {
		return err
	}
	k.spans = append(k.spans, [2]int{a, b})
	return nil
}

// recordedSpans names the spans of the recorded collectives.
func (k *commClock) recordedSpans() []namedSpan {
	out := make([]namedSpan, 0, len(k.names))
	for i, n := range k.names {
		if i < len(k.spans) {
			out = append(out, namedSpan{n, k.spans[i][0], k.spans[i][1]})
		}
	}
	return out
}
