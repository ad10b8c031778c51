package moe

import (
	"math"

	"github.com/moerun/moerun/dtype"
)

// Deterministic weights and inputs. Every element of every tensor is a pure function of
// (seed, tensor, expert, row, column): a counter-based hash (SplitMix64 steps) mapped to a
// uniform value in [-scale, scale), rounded to the layer's dtype. So each rank makes only
// its own shard, the reference recomputes any expert without communication, and the GPU
// ops generate weights on the device with the same integer arithmetic.

// TensorID names a generated tensor. The values are part of the format: changing one
// changes every generated number.
type TensorID uint32

const (
	TensorX          TensorID = 1  // hidden states: expert slot = token source (dp·pcp + pcp rank)
	TensorRouter     TensorID = 2  // router gate [E, H]
	TensorBias       TensorID = 3  // e_score_correction_bias [E] (row 0)
	TensorGate       TensorID = 4  // expert gate_proj (w1) [I, H]
	TensorUp         TensorID = 5  // expert up_proj (w3) [I, H]
	TensorDown       TensorID = 6  // expert down_proj (w2) [H, I]
	TensorSharedGate TensorID = 7  // shared experts gate_proj [Is, H]
	TensorSharedUp   TensorID = 8  // shared experts up_proj [Is, H]
	TensorSharedDown TensorID = 9  // shared experts down_proj [H, Is]
	TensorLatentIn   TensorID = 10 // routed input transform [L, H]
	TensorLatentOut  TensorID = 11 // output transform [H, L]
)

func mix(z uint64) uint64 {
	z += 0x9e3779b97f4a7c15
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// Uniform is the raw generated value in [-1, 1) of one element.
func Uniform(seed uint64, t TensorID, expert, row, col int) float32 {
	h := mix(seed ^ uint64(t)<<32)
	h = mix(h ^ uint64(uint32(expert)))
	h = mix(h ^ uint64(uint32(row))<<32 ^ uint64(uint32(col)))
	// 24 random bits: exactly representable in float32.
	return float32(int64(h>>40)-(1<<23)) / (1 << 23)
}

// Value is element (row, col) of tensor t of the given expert, scaled and rounded to dt.
func Value(seed uint64, t TensorID, expert, row, col int, scale float32, dt dtype.DType) float32 {
	v := Uniform(seed, t, expert, row, col) * scale
	if dt == dtype.BFloat16 {
		v = dtype.FromFloat32(v).Float32()
	}
	return v
}

// Gen describes how to fill a (sharded) tensor: row r of the tensor lies in block
// b = r / BlockRows, which holds rows of global expert Experts[b] (b itself if Experts is
// nil); inside the block, rows below SplitAt come from tensor A and the others from tensor
// B (rows counted from SplitAt); RowOffset and ColOffset place the shard inside the full
// tensor; rows at or past ValidRows and columns at or past ValidCols of a block are zero
// padding (0 means no padding).
type Gen struct {
	Seed                 uint64
	A, B                 TensorID
	BlockRows, SplitAt   int
	Experts              []int
	RowOffset, ColOffset int
	ValidRows, ValidCols int
	Scale                float32
}

// At is the value of element (r, c) of the described tensor, before rounding to a dtype.
func (g *Gen) At(r, c int) float32 {
	b, j := 0, r
	if g.BlockRows > 0 {
		b, j = r/g.BlockRows, r%g.BlockRows
	}
	if (g.ValidCols > 0 && c >= g.ValidCols) || (g.ValidRows > 0 && j >= g.ValidRows) {
		return 0
	}
	expert := b
	if g.Experts != nil {
		expert = g.Experts[b]
	}
	t := g.A
	if g.SplitAt > 0 && j >= g.SplitAt {
		t, j = g.B, j-g.SplitAt
	}
	return Uniform(g.Seed, t, expert, j+g.RowOffset, c+g.ColOffset) * g.Scale
}

// uniformScale is the half-width of a uniform distribution with standard deviation std.
func uniformScale(std float64) float32 { return float32(std * math.Sqrt(3)) }

func sqrt(n int) float64 { return math.Sqrt(float64(n)) }
