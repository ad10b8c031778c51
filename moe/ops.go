package moe

import (
	"github.com/moerun/moerun/dtype"
	"github.com/moerun/moerun/moe/router"
)

// Ops is the compute of one device. The runner drives a forward pass through it and a
// communicator, and never touches memory itself, so the same runner runs on the CPU
// (moe/cpu) and on a GPU. Tensors passed in were allocated by the same Ops. Activations
// are in the layer's dtype; routing weights, logits and accumulations are float32; expert
// ids are int32.
type Ops interface {
	// Name is the device's name for tables and logs ("cpu", "cuda:0").
	Name() string
	// Alloc returns a zeroed rows×cols tensor.
	Alloc(dt dtype.DType, rows, cols int) (Tensor, error)
	// Free releases a tensor's memory (a no-op where the garbage collector owns it).
	Free(t Tensor)
	// Fill sets every element of t from g, rounded to t's dtype.
	Fill(t Tensor, g *Gen) error
	// Upload copies host values (one per element, row-major) into t, rounding to its dtype.
	Upload(t Tensor, host []float32) error
	// Download copies t into host values.
	Download(t Tensor, host []float32) error
	// Copy copies src into dst (same shape and dtype).
	Copy(dst, src Tensor) error
	// Zero sets every element of t to 0.
	Zero(t Tensor) error
	// CopyCols copies the leading min(dst.Cols, src.Cols) columns of every row of src into
	// dst (same rows and dtype) and zeroes dst's other columns: the hidden-size padding and
	// truncation of §1.6.
	CopyCols(dst, src Tensor) error
	// Linear sets out = x · wᵀ (x [n, k], w [m, k], out [n, m]).
	Linear(x, w, out Tensor) error
	// Logits sets out = x · wᵀ in float32 (out [n, E] float32, w the router gate [E, k]).
	Logits(x, w, out Tensor) error
	// Route selects experts for each row of logits [n, E]: weights [n, K] float32 and ids
	// [n, K] int32, as router.Route does.
	Route(cfg router.Config, logits, weights, ids Tensor) error
	// Experts sets out[t] = Σ_k weights[t,k] · expert(ids[t,k])(x[t]) over the slots whose
	// expert is local (expertMap[id] >= 0, or every expert when expertMap is nil); other
	// slots add nothing. Each expert is act(x·gateᵀ) ⊙ (x·upᵀ) then ·downᵀ, with the
	// weighted sum over K in float32 and one rounding to out's dtype. With onInput
	// (K = 1) x[t] is scaled by weights[t,0] first and the output is not weighted.
	Experts(x, weights, ids Tensor, w *ExpertWeights, expertMap []int32, act Activation, onInput bool, out Tensor) error
	// MLP sets out = (act(x·gateᵀ) ⊙ (x·upᵀ))·downᵀ for a dense gated MLP (shared experts).
	MLP(x Tensor, w *MLPWeights, act Activation, out Tensor) error
	// Axpby sets dst = a·dst + b·src element-wise (computed in float32).
	Axpby(a float32, dst Tensor, b float32, src Tensor) error
	// Sync waits until all queued work has finished (GPU streams; a no-op on the CPU).
	Sync() error
}

// ExpertWeights are one rank's local experts: W13 holds, for local expert l, rows
// [l·2I, l·2I+I) = gate (w1) and [l·2I+I, (l+1)·2I) = up (w3), each [I, H] (vLLM's w13
// layout, I the rank's slice of the intermediate size); W2 holds rows [l·H, (l+1)·H) =
// down (w2) [H, I].
type ExpertWeights struct {
	Local int // experts on this rank
	I, H  int // intermediate slice and (padded) hidden size
	W13   Tensor
	W2    Tensor
}

// MLPWeights are a dense gated MLP: W13 [2I, H] (gate rows, then up rows) and W2 [H, I].
type MLPWeights struct {
	I, H int
	W13  Tensor
	W2   Tensor
}

// Activation is the gated activation applied to the gate half.
type Activation int

const (
	SiLU Activation = iota // u·σ(u)
	GELU                   // exact erf GELU (vLLM's gelu_and_mul)
)

func (a Activation) String() string {
	if a == GELU {
		return "gelu"
	}
	return "silu"
}

// Overlapper is implemented by ops that can queue work beside their main stream (a GPU's
// second stream). The runner then splits a large dispatched batch in two and runs each
// half's experts beside the other half's collectives (SetOverlap).
type Overlapper interface {
	// Beside runs f, whose ops go to a second queue that starts once everything queued
	// so far has run, and returns a mark of the end of f's work. f may not run
	// collectives: they stay on the main queue.
	Beside(f func() error) (Mark, error)
	// Await makes the work queued after it wait for m (the device waits, not the host).
	Await(m Mark) error
}

// Mark is the end of the work of one Overlapper.Beside.
type Mark any

// OverlapperOf is ops's Overlapper: ops itself, or what a wrapper of ops reports through an
// Overlapper() method (nil when ops cannot overlap).
func OverlapperOf(ops Ops) Overlapper {
	if o, ok := ops.(Overlapper); ok {
		return o
	}
	if w, ok := ops.(interface{ Overlapper() Overlapper }); ok {
		return w.Overlapper()
	}
	return nil
}
