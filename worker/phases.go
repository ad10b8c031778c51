package worker

import (
	"slices"

	"github.com/moerun/moerun/moe"
	"github.com/moerun/moerun/moe/router"
)

// phaseOps passes every call through to the device ops and, while on (the untimed profile
// pass), marks each compute call on the stopwatch under its name, so that a forward pass
// splits into phases (route, experts, shared MLP, …) beside the collectives that
// commClock names. On a GPU the marks are CUDA events in stream order, so each span is
// the device time of that call and the gaps before it.
type phaseOps struct {
	moe.Ops
	watch stopwatch
	on    bool
	spans []namedSpan
}

type namedSpan struct {
	name string
	a, b int
}

func (p *phaseOps) span(name string, f func() error) error {
	if !p.on {
		return f()
	}
	a, err := p.watch.Mark()
	if err != nil {
		return err
	}
	if err := f(); err != nil {
		return err
	}
	b, err := p.watch.Mark()
	if err != nil {
		return err
	}
	p.spans = append(p.spans, namedSpan{name, a, b})
	return nil
}

// Overlapper is the device's second queue, if it has one (moe.OverlapperOf): work queued
// there goes through p like the rest, so its spans are marked on that queue.
func (p *phaseOps) Overlapper() moe.Overlapper { return moe.OverlapperOf(p.Ops) }

func (p *phaseOps) Route(cfg router.Config, logits, weights, ids moe.Tensor) error {
	return p.span("route", func() error { return p.Ops.Route(cfg, logits, weights, ids) })
}

func (p *phaseOps) Experts(x, weights, ids moe.Tensor, w *moe.ExpertWeights, expertMap []int32, act moe.Activation, onInput bool, out moe.Tensor) error {
	return p.span("experts", func() error { return p.Ops.Experts(x, weights, ids, w, expertMap, act, onInput, out) })
}

func (p *phaseOps) MLP(x moe.Tensor, w *moe.MLPWeights, act moe.Activation, out moe.Tensor) error {
	return p.span("shared_mlp", func() error { return p.Ops.MLP(x, w, act, out) })
}

func (p *phaseOps) Linear(x, w, out moe.Tensor) error {
	return p.span("linear", func() error { return p.Ops.Linear(x, w, out) })
}

func (p *phaseOps) Axpby(a float32, dst moe.Tensor, b float32, src moe.Tensor) error {
	return p.span("elementwise", func() error { return p.Ops.Axpby(a, dst, b, src) })
}

func (p *phaseOps) CopyCols(dst, src moe.Tensor) error {
	return p.span("elementwise", func() error { return p.Ops.CopyCols(dst, src) })
}

func (p *phaseOps) Copy(dst, src moe.Tensor) error {
	return p.span("elementwise", func() error { return p.Ops.Copy(dst, src) })
}

// phaseTimes adds the spans up by name, in milliseconds.
func phaseTimes(w stopwatch, spans []namedSpan) (map[string]float64, error) {
	out := map[string]float64{}
	for _, s := range spans {
		d, err := w.Seconds(s.a, s.b)
		if err != nil {
			return nil, err
		}
		out[s.name] += 1e3 * d
	}
	return out, nil
}

// phaseNames lists a phase map's names, largest first.
func phaseNames(m map[string]float64) []string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	slices.SortFunc(names, func(a, b string) int {
		switch {
		case m[a] > m[b]:
			return -1
		case m[a] < m[b]:
			return 1
		}
		return 0
	})
	return names
}
