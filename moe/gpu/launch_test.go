package gpu

import (
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
