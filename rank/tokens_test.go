package rank

import (
	"fmt"
	"slices"
	"testing"
)

// TestDPMetadata_Section6: n=[5,2], sp=2.
func TestDPMetadata_Section6(t *testing.T) {
	n := []int{5, 2}
	if got := SPTokens(n, 2); !slices.Equal(got, []int{3, 3, 1, 1}) {
		t.Errorf("sp_tokens = %v, want [3 3 1 1]", got)
	}
	if got := CuSPTokens(n, 2); !slices.Equal(got, []int{3, 6, 7, 8}) {
		t.Errorf("cu_tokens_across_sp = %v, want [3 6 7 8]", got)
	}
	for i, want := range [][]int{{2, 2, 1, 1}, {1, 1, 1, 1}} {
		if got := ChunkedSizes(n, 2, 2, i); !slices.Equal(got, want) {
			t.Errorf("chunked_sizes(2, 2, %d) = %v, want %v", i, got, want)
		}
	}
	if got := NumChunks(5, 2, 2); got != 2 {
		t.Errorf("NumChunks(5, sp 2, C 2) = %d, want 2", got)
	}
}

// TestDPChunking_Section1_5: dp=2, n=[600,100], C=256 → 3 chunks on every rank; rank 1 re-sends
// its last row [99,100) once exhausted.
func TestDPChunking_Section1_5(t *testing.T) {
	n := []int{600, 100}
	const c = 256
	chunks := NumChunks(600, 1, c)
	if chunks != 3 {
		t.Fatalf("NumChunks = %d, want 3", chunks)
	}
	wantSizes := [][]int{{256, 100}, {256, 1}, {88, 1}}
	wantRows := [][][2]int{
		{{0, 256}, {256, 512}, {512, 600}},
		{{0, 100}, {99, 100}, {99, 100}},
	}
	for i := range chunks {
		if got := ChunkedSizes(n, 1, c, i); !slices.Equal(got, wantSizes[i]) {
			t.Errorf("chunked_sizes(1, %d, %d) = %v, want %v", c, i, got, wantSizes[i])
		}
		for r := range n {
			s, e := ChunkRows(n[r], 600, c, i)
			if [2]int{s, e} != wantRows[r][i] {
				t.Errorf("rank %d chunk %d rows [%d, %d), want %v", r, i, s, e, wantRows[r][i])
			}
			if e-s != wantSizes[i][r] {
				t.Errorf("rank %d chunk %d: %d rows, chunked_sizes says %d", r, i, e-s, wantSizes[i][r])
			}
		}
	}
}

func TestNumChunks_Section1_5(t *testing.T) {
	tests := []struct{ maxT, sp, c, want int }{
		{600, 1, 256, 3},
		{600, 2, 256, 2}, // M = 300
		{512, 1, 256, 2},
		{513, 1, 256, 3},
		{1, 1, 256, 1},
		{0, 1, 256, 0},
		{5, 2, 2, 2},
		{7, 4, 1, 2},
		{-1, 1, 256, -1},
		{10, 0, 256, -1},
		{10, 1, 0, -1},
	}
	for _, tc := range tests {
		if got := NumChunks(tc.maxT, tc.sp, tc.c); got != tc.want {
			t.Errorf("NumChunks(%d, %d, %d) = %d, want %d", tc.maxT, tc.sp, tc.c, got, tc.want)
		}
	}
}

func TestSPTokens_Section6(t *testing.T) {
	tests := []struct {
		n    []int
		sp   int
		want []int
	}{
		{[]int{5, 2}, 1, []int{5, 2}},
		{[]int{5, 2}, 2, []int{3, 3, 1, 1}},
		{[]int{4}, 4, []int{1, 1, 1, 1}},
		{[]int{0, 7}, 2, []int{0, 0, 4, 4}},
		{[]int{}, 2, []int{}},
		{[]int{5}, 0, nil},
		{[]int{5, -1}, 1, nil},
	}
	for _, tc := range tests {
		got := SPTokens(tc.n, tc.sp)
		if !slices.Equal(got, tc.want) || (got == nil) != (tc.want == nil) {
			t.Errorf("SPTokens(%v, %d) = %#v, want %#v", tc.n, tc.sp, got, tc.want)
		}
	}
}

func TestChunkedSizesInvalid(t *testing.T) {
	for _, tc := range []struct{ sp, c, i int }{{0, 2, 0}, {1, 0, 0}, {1, 2, -1}} {
		if got := ChunkedSizes([]int{5, 2}, tc.sp, tc.c, tc.i); got != nil {
			t.Errorf("ChunkedSizes(sp %d, C %d, i %d) = %v, want nil", tc.sp, tc.c, tc.i, got)
		}
	}
}

func TestChunkRows_Section1_5(t *testing.T) {
	tests := []struct{ n, m, c, i, s, e int }{
		{600, 600, 256, 2, 512, 600},
		{100, 600, 256, 1, 99, 100},
		{1, 3, 1, 2, 0, 1},
		{0, 600, 256, 0, 0, 0}, // vLLM's [-1:0] is empty
		{-1, 600, 256, 0, -1, -1},
		{700, 600, 256, 0, -1, -1},
		{10, 10, 0, 0, -1, -1},
		{10, 10, 2, -1, -1, -1},
	}
	for _, tc := range tests {
		if s, e := ChunkRows(tc.n, tc.m, tc.c, tc.i); s != tc.s || e != tc.e {
			t.Errorf("ChunkRows(%d, %d, %d, %d) = [%d, %d), want [%d, %d)", tc.n, tc.m, tc.c, tc.i, s, e, tc.s, tc.e)
		}
	}
}

// TestChunkLockstep_Section1_5: for many token mixes, every rank runs NumChunks iterations and
// its row ranges have exactly the sizes chunked_sizes announces, covering all its rows.
func TestChunkLockstep_Section1_5(t *testing.T) {
	for _, n := range [][]int{{600, 100}, {1, 1}, {5, 2}, {300, 1, 257}, {256, 256}, {3, 9, 1, 12}} {
		for _, sp := range []int{1, 2, 4} {
			for _, c := range []int{1, 2, 7, 256} {
				t.Run(fmt.Sprintf("%v_sp%d_C%d", n, sp, c), func(t *testing.T) {
					spt := SPTokens(n, sp)
					chunks := NumChunks(slices.Max(n), sp, c)
					m := slices.Max(n)
					if sp > 1 {
						m = (m + sp - 1) / sp
					}
					for k, rows := range spt {
						covered := 0
						for i := range chunks {
							s, e := ChunkRows(rows, m, c, i)
							if got := ChunkedSizes(n, sp, c, i)[k]; e-s != got {
								t.Errorf("slot %d chunk %d: rows [%d, %d), chunked_sizes %d", k, i, s, e, got)
							}
							if s == covered {
								covered = e
							}
						}
						if covered != rows {
							t.Errorf("slot %d: covered %d of %d rows in %d chunks", k, covered, rows, chunks)
						}
					}
				})
			}
		}
	}
}
