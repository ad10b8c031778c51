package gpu

import (
	"encoding/binary"
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

// The expert GEMM by plan and shape: decode plans take the tensor-core kernel where its
// shapes fit (else the GEMV kernel on 8-row tiles, else cuBLAS), exact plans only while
// every expert fits one pass; older devices and float32 never take it.
func TestChooseGEMM(t *testing.T) {
	defer func() { forceGEMM = "" }()
	hopper, volta := &Ops{cc: 90, mma: mmaKernels[""]}, &Ops{cc: 70, mma: mmaKernels[""]}
	ds := [2][2]int{{4096, 7168}, {7168, 2048}} // deepseek-v3: gate+up, down
	odd := [2][2]int{{64, 40}, {40, 32}}        // K not a multiple of 64
	p8, p32, p64 := tilePlan{R: 8, MaxTiles: 64}, tilePlan{R: 32, MaxTiles: 64}, tilePlan{R: 64, MaxTiles: 64}
	k64 := [2][2]int{{4096, 7168}, {7168, 2112}} // K a multiple of 64, not of 128
	exact := tilePlan{R: 128, MaxTiles: 64, Exact: true}
	for _, c := range []struct {
		o      *Ops
		force  string
		p      tilePlan
		dt     dtype.DType
		shapes [2][2]int
		mean   int // rows·top-k / experts
		local  int
		counts []float32
		want   expertGEMM
	}{
		{hopper, "", p8, dtype.BFloat16, ds, 4, 128, nil, gemmMMA},
		{hopper, "", p32, dtype.BFloat16, ds, 16, 128, nil, gemmMMA},
		{hopper, "", p8, dtype.BFloat16, odd, 4, 128, nil, gemmGEMV},
		{hopper, "", p32, dtype.BFloat16, odd, 16, 128, nil, gemmCUBLAS},
		{hopper, "", p8, dtype.Float32, ds, 4, 128, nil, gemmCUBLAS},
		{volta, "", p8, dtype.BFloat16, ds, 4, 128, nil, gemmGEMV},
		{hopper, "", p64, dtype.BFloat16, ds, 16, 128, nil, gemmMMA},    // EP: half the slots are local
		{hopper, "", p64, dtype.BFloat16, ds, 17, 128, nil, gemmCUBLAS}, // past mmaMaxMeanRows
		{hopper, "", p32, dtype.BFloat16, ds, 8, 4, nil, gemmMMA},       // few experts
		{hopper, "", p64, dtype.BFloat16, ds, 9, 4, nil, gemmCUBLAS},    // few experts, past mmaFewMaxMeanRows
		{hopper, "", p8, dtype.BFloat16, k64, 4, 128, nil, gemmGEMV},
		{hopper, "", exact, dtype.BFloat16, ds, 200, 4, []float32{3, 32, 0}, gemmMMA},
		{hopper, "", exact, dtype.BFloat16, ds, 1, 128, []float32{3, 33, 0}, gemmCUBLAS},
		{hopper, "cublas", p8, dtype.BFloat16, ds, 4, 128, nil, gemmCUBLAS},
		{hopper, "gemv", p8, dtype.BFloat16, ds, 4, 128, nil, gemmGEMV},
		{hopper, "gemv", p32, dtype.BFloat16, ds, 16, 128, nil, gemmCUBLAS},
		{hopper, "mma", exact, dtype.BFloat16, ds, 1, 128, []float32{300}, gemmMMA},
		{hopper, "mma", p8, dtype.BFloat16, odd, 4, 128, nil, gemmCUBLAS},
		{hopper, "mma", p64, dtype.BFloat16, ds, 64, 4, nil, gemmMMA},
	} {
		forceGEMM = c.force
		if got := c.o.chooseGEMM(c.p, c.dt, c.shapes, c.mean, c.local, c.counts); got != c.want {
			t.Errorf("cc %d, force %q, plan %+v, %v, shapes %v, mean %d, local %d, counts %v: got %d, want %d", c.o.cc, c.force, c.p, c.dt, c.shapes, c.mean, c.local, c.counts, got, c.want)
		}
	}
}

// Buckets by padded rows, each expert's addresses from its index (weights) or first row.
func TestBucketExperts(t *testing.T) {
	// R = 64: experts 0..4 have 100, 0, 64, 130, 1 rows → tiles 2, 0, 1, 3, 1, first rows
	// 0, -, 128, 192, 384.
	counts := []float32{100, 0, 64, 130, 1}
	bases := [6]uint64{1 << 40, 2 << 40, 3 << 40, 4 << 40, 5 << 40, 6 << 40}
	per := [6]uint64{1000, 10, 20, 2000, 30, 40}
	buckets, arrays := bucketExperts(counts, 64, bases, per)
	want := []bucket{{rows: 64, experts: 2, first: 0}, {rows: 128, experts: 1, first: 2}, {rows: 192, experts: 1, first: 3}}
	if len(buckets) != len(want) {
		t.Fatalf("buckets %+v, want %+v", buckets, want)
	}
	for i := range want {
		if buckets[i] != want[i] {
			t.Errorf("bucket %d: %+v, want %+v", i, buckets[i], want[i])
		}
	}
	order := []struct{ e, firstRow uint64 }{{2, 128}, {4, 384}, {0, 0}, {3, 192}} // by tiles, stable
	if len(arrays) != 6*8*len(order) {
		t.Fatalf("%d bytes of arrays, want %d", len(arrays), 6*8*len(order))
	}
	for a := range 6 {
		for i, x := range order {
			unit := x.firstRow
			if a == 0 || a == 3 {
				unit = x.e
			}
			got := binary.LittleEndian.Uint64(arrays[(a*len(order)+i)*8:])
			if w := bases[a] + unit*per[a]; got != w {
				t.Errorf("array %d entry %d: %#x, want %#x", a, i, got, w)
			}
		}
	}
}
