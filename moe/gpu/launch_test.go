package gpu

import (
	"math/rand/v2"
	"testing"

	"github.com/moerun/moerun/dtype"
)

// The launch arithmetic, on any machine: every element gets a thread, no block is idle.
func TestGrid1D(t *testing.T) {
	for _, n := range []int{1, 255, 256, 257, 1 << 20, 7168 * 4096} {
		b, th, err := grid1D(n)
		if err != nil {
			t.Fatal(err)
		}
		total := int(b[0]) * int(th[0])
		if total < n || total-n >= int(th[0]) || b[1] != 1 || th[1] != 1 {
			t.Errorf("n %d: grid %v × %v", n, b, th)
		}
	}
	if _, _, err := grid1D(1 << 40); err == nil {
		t.Error("a grid of 2^32 blocks was accepted")
	}
	if kernelType(dtype.BFloat16) != 1 || kernelType(dtype.Float32) != 0 {
		t.Error("kernel element types")
	}
}

// The tile plan bounds every routing: for any split of n·k slots over the local experts
// (each expert at most n rows), the tiles in use fit in MaxTiles, and tiles stay aligned.
func TestPlanTilesBoundsEveryRouting(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, c := range []struct{ n, k, local int }{
		{1, 1, 1}, {1, 8, 128}, {2, 8, 128}, {32, 8, 128}, {256, 8, 128}, {2048, 8, 128}, {8192, 8, 128},
		{2, 2, 4}, {256, 2, 4}, {8192, 2, 4}, {5, 3, 2}, {300, 2, 2}, {7, 1, 256}, {3, 8, 512},
	} {
		p := planTiles(c.n, c.k, c.local)
		if p.R%8 != 0 || p.R < 8 || p.R > maxTileRows || p.MaxTiles < 1 || p.MaxTiles > c.n*c.k {
			t.Fatalf("%+v: plan %+v", c, p)
		}
		for trial := 0; trial < 200; trial++ {
			counts := make([]int, c.local)
			// Each token picks k distinct experts: uniform, skewed, or all on the first k.
			for tok := 0; tok < c.n; tok++ {
				picked := map[int]bool{}
				for len(picked) < min(c.k, c.local) {
					var e int
					switch trial % 3 {
					case 0:
						e = r.IntN(c.local)
					case 1:
						e = int(float64(c.local) * r.Float64() * r.Float64())
					default:
						e = len(picked)
					}
					picked[e] = true
				}
				for e := range picked {
					counts[e]++
				}
			}
			tiles := 0
			for _, m := range counts {
				tiles += (m + p.R - 1) / p.R
			}
			if tiles > p.MaxTiles {
				t.Fatalf("%+v: routing %v needs %d tiles of %d rows, plan allows %d", c, counts, tiles, p.R, p.MaxTiles)
			}
		}
	}
	// Decode sizes never read the tile count back; prefill sizes do.
	for _, c := range []struct {
		n, k, local int
		exact       bool
	}{{2, 8, 128, false}, {32, 8, 128, false}, {256, 8, 128, false}, {2048, 8, 128, true}, {8192, 8, 128, true}, {2, 2, 4, false}, {8192, 2, 4, true}} {
		if p := planTiles(c.n, c.k, c.local); p.Exact != c.exact {
			t.Errorf("n %d k %d local %d: plan %+v, want exact %v", c.n, c.k, c.local, p, c.exact)
		}
	}
}

// The GEMV kernel takes only 8-row bf16 tiles with K in 16-byte pieces.
func TestUseGEMV(t *testing.T) {
	p8 := tilePlan{R: 8, MaxTiles: 16}
	for _, c := range []struct {
		p    tilePlan
		dt   dtype.DType
		n, k int
		want bool
	}{
		{p8, dtype.BFloat16, 4096, 7168, true},
		{p8, dtype.BFloat16, 7168, 2048, true},
		{p8, dtype.Float32, 4096, 7168, false},
		{tilePlan{R: 16, MaxTiles: 8}, dtype.BFloat16, 4096, 7168, false},
		{p8, dtype.BFloat16, 4096, 7170, false},
		{p8, dtype.BFloat16, 40 << 20, 8, false}, // more row blocks than a grid's y holds
	} {
		if got := useGEMV(c.p, c.dt, c.n, c.k); got != c.want {
			t.Errorf("%+v: useGEMV %v, want %v", c, got, c.want)
		}
	}
}
