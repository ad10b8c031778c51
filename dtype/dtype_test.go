package dtype

import (
	"math"
	"testing"
)

// The widening is exact and rounding it back is the identity, for all 2^16 values.
func TestBF16RoundTripExhaustive(t *testing.T) {
	for i := 0; i < 1<<16; i++ {
		b := BF16(i)
		f := b.Float32()
		got := FromFloat32(f)
		if math.IsNaN(float64(f)) {
			if !math.IsNaN(float64(got.Float32())) {
				t.Fatalf("NaN %#04x rounded to %#04x, not NaN", i, got)
			}
			continue
		}
		if got != b {
			t.Fatalf("FromFloat32(%v) = %#04x, want %#04x", f, got, b)
		}
	}
}

// Every float32 halfway between two neighbouring bf16 values rounds to the even one, and
// values just off the midpoint round to the nearer one.
func TestBF16RoundingExhaustiveMidpoints(t *testing.T) {
	for i := 0; i < 1<<16; i++ {
		lo := uint32(i) << 16
		if lo&0x7f800000 == 0x7f800000 || lo&0xffff0000 == 0x7f7f0000 || lo&0xffff0000 == 0xff7f0000 {
			continue // NaN/Inf, and the largest finite values whose upper neighbour is infinity
		}
		mid := lo | 0x8000
		want := BF16(i)
		if i&1 == 1 {
			want = BF16(i + 1)
		}
		if got := FromFloat32(math.Float32frombits(mid)); got != want {
			t.Fatalf("midpoint %#08x: got %#04x want %#04x", mid, got, want)
		}
		if got := FromFloat32(math.Float32frombits(mid - 1)); got != BF16(i) {
			t.Fatalf("below midpoint %#08x: got %#04x want %#04x", mid-1, got, i)
		}
		if got := FromFloat32(math.Float32frombits(mid + 1)); got != BF16(i+1) {
			t.Fatalf("above midpoint %#08x: got %#04x want %#04x", mid+1, got, i+1)
		}
	}
}

func TestBF16Specials(t *testing.T) {
	cases := []struct {
		f    float32
		want BF16
	}{
		{0, 0}, {1, 0x3f80}, {-2, 0xc000}, {float32(math.Inf(1)), 0x7f80},
		{math.MaxFloat32, 0x7f80}, // rounds up to infinity, as in PyTorch
		{1.00390625, 0x3f80},      // 1 + 2^-8: a tie, rounds to even (down)
		{1.01171875, 0x3f82},      // 1 + 3·2^-8: a tie, rounds to even (up)
	}
	for _, c := range cases {
		if got := FromFloat32(c.f); got != c.want {
			t.Errorf("FromFloat32(%v) = %#04x, want %#04x", c.f, got, c.want)
		}
	}
	if n := FromFloat32(float32(math.NaN())); !math.IsNaN(float64(n.Float32())) {
		t.Errorf("NaN became %#04x", n)
	}
}

func TestParse(t *testing.T) {
	for _, c := range []struct {
		in   string
		want DType
	}{{"float32", Float32}, {"f32", Float32}, {"bf16", BFloat16}, {"BFloat16", BFloat16}} {
		got, err := Parse(c.in)
		if err != nil || got != c.want {
			t.Errorf("Parse(%q) = %v, %v; want %v", c.in, got, err, c.want)
		}
		if got.String() != "float32" && got.String() != "bf16" {
			t.Errorf("String of %v", got)
		}
	}
	if _, err := Parse("fp8"); err == nil {
		t.Error("Parse(fp8) succeeded")
	}
	if Invalid.Size() != 0 || Float32.Size() != 4 || BFloat16.Size() != 2 || Int32.Size() != 4 || Int32.Float() || !BFloat16.Float() {
		t.Error("sizes")
	}
}
