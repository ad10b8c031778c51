package moe

import (
	"fmt"
	"math"

	"github.com/moerun/moerun/dtype"
	"github.com/moerun/moerun/internal/parallel"
	"github.com/moerun/moerun/moe/router"
)

// Reference is the unsharded layer computed plainly in float64 on one process: the oracle
// of the tests and of --check. It reads the same generated weights (rounded to the layer's
// dtype, then exact in float64) and routes with the same float32 router on the same
// logits, so that a near-tie between two experts cannot make it pick other experts than
// the runner did; everything after routing is float64, with no intermediate rounding.
type Reference struct {
	cfg   Config
	seed  uint64
	full  Shard // the layer on one rank: every expert, the whole intermediate size
	rc    router.Config
	act   Activation
	dt    dtype.DType
	hpad  int
	cache map[int][2][]float64 // expert → (W13 [2I, Hpad], W2 [Hpad, I]); bounded by budget
	bytes int64

	sharedW13, sharedW2 []float64
	latentIn, latentOut []float64
}

// referenceBudget bounds the expert weights the reference keeps (float64 bytes); beyond it
// experts are regenerated when needed.
const referenceBudget = 2 << 30

// NewReference prepares the reference of cfg with the weights of seed.
func NewReference(cfg Config, seed uint64) (*Reference, error) {
	full, err := unsharded(cfg)
	if err != nil {
		return nil, err
	}
	ref := &Reference{cfg: cfg, seed: seed, full: full, hpad: cfg.PaddedHidden(), cache: map[int][2][]float64{}}
	ref.dt, _ = cfg.ElementType()
	ref.act, _ = cfg.ActivationKind()
	if ref.rc, err = cfg.RouterConfig(Bias(cfg, seed)); err != nil {
		return nil, err
	}
	if cfg.SharedIntermediate > 0 {
		ref.sharedW13 = ref.generate(full.sharedW13Gen(seed), 2*cfg.SharedIntermediate, cfg.Hidden)
		ref.sharedW2 = ref.generate(full.sharedW2Gen(seed), cfg.Hidden, cfg.SharedIntermediate)
	}
	if cfg.Latent > 0 {
		ref.latentIn = ref.generate(latentInGen(seed, cfg), cfg.Latent, cfg.Hidden)
		ref.latentOut = ref.generate(latentOutGen(seed, cfg), cfg.Hidden, cfg.Latent)
	}
	return ref, nil
}

// generate materialises rows×cols of g, rounded to the layer's dtype, as float64, on every
// CPU: a deepseek-v3 expert is 44 M values, and --check may need dozens of them.
func (ref *Reference) generate(g *Gen, rows, cols int) []float64 {
	out := make([]float64, rows*cols)
	parallel.Ranges(rows, (1<<16)/max(cols, 1), func(lo, hi int) { // ≥ 64 Ki values a piece
		for r := lo; r < hi; r++ {
			for c := 0; c < cols; c++ {
				out[r*cols+c] = float64(round(g.At(r, c), ref.dt))
			}
		}
	})
	return out
}

// rowGen is g shifted by whole rows, so that one block (expert) can be generated alone.
func rowGen(g *Gen, first int) *Gen {
	h := *g
	h.Experts = []int{first / max(g.BlockRows, 1)}
	return &h
}

func round(v float32, dt dtype.DType) float32 {
	if dt == dtype.BFloat16 {
		return dtype.FromFloat32(v).Float32()
	}
	return v
}

func (ref *Reference) expert(e int) ([]float64, []float64) {
	if w, ok := ref.cache[e]; ok {
		return w[0], w[1]
	}
	i := ref.cfg.Intermediate
	w13 := ref.generate(rowGen(ref.full.w13Gen(ref.seed), e*2*i), 2*i, ref.hpad)
	w2 := ref.generate(rowGen(ref.full.w2Gen(ref.seed), e*ref.hpad), ref.hpad, i)
	size := int64(8 * (len(w13) + len(w2)))
	if ref.bytes+size <= referenceBudget {
		ref.cache[e] = [2][]float64{w13, w2}
		ref.bytes += size
	}
	return w13, w2
}

// Forward returns the layer's output [rows, H] for inputs x [rows, H] (the values the
// runner got, exact in float32) and router logits [rows, E].
func (ref *Reference) Forward(x, logits []float32, rows int) ([]float64, error) {
	c := ref.cfg
	h, hp, e, k := c.Hidden, ref.hpad, c.Experts, c.TopK
	if len(x) != rows*h || len(logits) != rows*e {
		return nil, fmt.Errorf("reference: %d rows need %d inputs and %d logits, got %d and %d", rows, rows*h, rows*e, len(x), len(logits))
	}
	weights := make([]float32, rows*k)
	ids := make([]int32, rows*k)
	if err := router.Route(ref.rc, logits, weights, ids); err != nil {
		return nil, err
	}
	out := make([]float64, rows*h)
	width := c.ExpertHidden()
	xr := make([]float64, hp) // the routed input, zero-padded
	fused := make([]float64, hp)
	xin := make([]float64, hp)
	for t := 0; t < rows; t++ {
		xt := x[t*h : (t+1)*h]
		clear(xr)
		if c.Latent > 0 {
			for j := 0; j < c.Latent; j++ {
				xr[j] = dot32(ref.latentIn[j*h:(j+1)*h], xt)
			}
		} else {
			for j, v := range xt {
				xr[j] = float64(v)
			}
		}
		clear(fused)
		for j := 0; j < k; j++ {
			w := float64(weights[t*k+j])
			copy(xin, xr)
			if c.WeightOnInput {
				for q := range xin {
					xin[q] *= w
				}
				w = 1
			}
			w13, w2 := ref.expert(int(ids[t*k+j]))
			y := mlp(xin, w13, w2, c.Intermediate, hp, ref.act)
			for q := range fused {
				fused[q] += w * y[q]
			}
		}
		o := out[t*h : (t+1)*h]
		s := c.Scale()
		if c.Latent > 0 {
			for q := 0; q < h; q++ {
				acc := 0.0
				for j := 0; j < width; j++ {
					acc += ref.latentOut[q*width+j] * fused[j]
				}
				o[q] = s * acc
			}
		} else {
			for q := 0; q < h; q++ {
				o[q] = s * fused[q]
			}
		}
		if ref.sharedW13 != nil {
			xf := make([]float64, h)
			for q, v := range xt {
				xf[q] = float64(v)
			}
			y := mlp(xf, ref.sharedW13, ref.sharedW2, c.SharedIntermediate, h, ref.act)
			for q := range o {
				o[q] += y[q]
			}
		}
	}
	return out, nil
}

// mlp is down(act(gate·x) ⊙ up·x) with w13 [2I, hdim] (gate rows, then up rows) and
// w2 [hdim, I].
func mlp(x, w13, w2 []float64, inter, hdim int, act Activation) []float64 {
	a := make([]float64, inter)
	for i := 0; i < inter; i++ {
		g := dot(w13[i*hdim:(i+1)*hdim], x)
		u := dot(w13[(inter+i)*hdim:(inter+i+1)*hdim], x)
		a[i] = activate(g, act) * u
	}
	y := make([]float64, hdim)
	for q := 0; q < hdim; q++ {
		y[q] = dot(w2[q*inter:(q+1)*inter], a)
	}
	return y
}

func activate(u float64, act Activation) float64 {
	if act == GELU {
		return 0.5 * u * (1 + math.Erf(u/math.Sqrt2))
	}
	return u / (1 + math.Exp(-u))
}

func dot(a, b []float64) float64 {
	s := 0.0
	for i := range a {
		s += a[i] * b[i]
	}
	return s
}

func dot32(a []float64, b []float32) float64 {
	s := 0.0
	for i := range a {
		s += a[i] * float64(b[i])
	}
	return s
}
