package gpu

import (
	"fmt"

	"github.com/moerun/moerun/cuda"
)

// Stopwatch times spans of the stream's work with CUDA events: Mark records an event in
// stream order and returns its index; once the stream has reached the marks (Sync),
// Seconds gives the GPU time between two of them. Events are created on first use and
// reused after Reset, so that timing allocates nothing in steady state.
type Stopwatch struct {
	o  *Ops
	ev []*cuda.Event
	n  int
}

// NewStopwatch returns a stopwatch on o's stream.
func (o *Ops) NewStopwatch() *Stopwatch { return &Stopwatch{o: o} }

// Mark records the next event on the stream.
func (s *Stopwatch) Mark() (int, error) {
	if s.n == len(s.ev) {
		e, err := s.o.dev.NewEvent()
		if err != nil {
			return 0, err
		}
		s.ev = append(s.ev, e)
	}
	if err := s.ev[s.n].Record(s.o.stream); err != nil {
		return 0, err
	}
	s.n++
	return s.n - 1, nil
}

// Seconds is the GPU time from mark a to mark b (both reached).
func (s *Stopwatch) Seconds(a, b int) (float64, error) {
	if a < 0 || b < 0 || a >= s.n || b >= s.n {
		return 0, fmt.Errorf("gpu: stopwatch marks %d and %d of %d", a, b, s.n)
	}
	ms, err := s.ev[b].Since(s.ev[a])
	return float64(ms) / 1e3, err
}

// Reset forgets the marks (keeping the events).
func (s *Stopwatch) Reset() { s.n = 0 }

// Close destroys the events.
func (s *Stopwatch) Close() {
	for _, e := range s.ev {
		e.Destroy()
	}
	s.ev, s.n = nil, 0
}
