// Package dtype owns the element types that moerun moves and computes on: their names,
// sizes, and the bfloat16 conversions. It has no dependencies so that every layer
// (comm, moe, cuda) can share one definition of "bf16".
package dtype

import (
	"fmt"
	"math"
	"strings"
)

// DType is an element type. The zero value is invalid so that a forgotten field is caught.
type DType int

const (
	Invalid DType = iota
	Float32
	BFloat16
	// Int32 holds expert ids. Communicators move only the float types.
	Int32
)

// Size is the number of bytes of one element.
func (t DType) Size() int {
	switch t {
	case Float32:
		return 4
	case BFloat16:
		return 2
	case Int32:
		return 4
	}
	return 0
}

// String is the short name used in flags, tables and JSON (nccl-tests spells them the same way).
func (t DType) String() string {
	switch t {
	case Float32:
		return "float32"
	case BFloat16:
		return "bf16"
	case Int32:
		return "int32"
	}
	return fmt.Sprintf("dtype(%d)", int(t))
}

// Valid reports whether t is one of the defined types.
func (t DType) Valid() bool { return t == Float32 || t == BFloat16 || t == Int32 }

// Float reports whether t is a floating-point type (what collectives move and add).
func (t DType) Float() bool { return t == Float32 || t == BFloat16 }

// Parse reads a type name: float32 (f32, float) or bf16 (bfloat16).
func Parse(s string) (DType, error) {
	switch strings.ToLower(s) {
	case "float32", "f32", "float", "fp32":
		return Float32, nil
	case "bf16", "bfloat16":
		return BFloat16, nil
	case "int32", "i32":
		return Int32, nil
	}
	return Invalid, fmt.Errorf("unknown dtype %q: expected float32 or bf16", s)
}

// BF16 is a bfloat16 value: the top 16 bits of an IEEE float32.
type BF16 uint16

// Float32 widens b exactly.
func (b BF16) Float32() float32 { return math.Float32frombits(uint32(b) << 16) }

// FromFloat32 rounds f to the nearest bfloat16, ties to even, as PyTorch and CUDA do.
// NaNs stay NaN (quiet) instead of rounding into infinity.
func FromFloat32(f float32) BF16 {
	u := math.Float32bits(f)
	if u&0x7fffffff > 0x7f800000 {
		return BF16(u>>16 | 0x0040)
	}
	u += 0x7fff + (u>>16)&1
	return BF16(u >> 16)
}

// MarshalText writes the type's name, so JSON reports say "bf16", not a number.
func (t DType) MarshalText() ([]byte, error) { return []byte(t.String()), nil }

// UnmarshalText reads a name accepted by Parse.
func (t *DType) UnmarshalText(b []byte) error {
	v, err := Parse(string(b))
	if err != nil {
		return err
	}
	*t = v
	return nil
}
