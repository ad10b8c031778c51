package moe

import (
	"fmt"

	"github.com/moerun/moerun/comm"
	"github.com/moerun/moerun/dtype"
)

// Tensor is a row-major matrix in one device's memory (host memory for the CPU ops,
// device memory for the GPU ops). Its buffer is what collectives move.
type Tensor struct {
	Buf        comm.Buffer
	Rows, Cols int
}

// DType is the element type.
func (t Tensor) DType() dtype.DType { return t.Buf.DType() }

// RowSlice is the n rows starting at row r0 (a view, not a copy).
func (t Tensor) RowSlice(r0, n int) Tensor {
	return Tensor{Buf: t.Buf.Slice(r0*t.Cols, n*t.Cols), Rows: n, Cols: t.Cols}
}

// Reshape views the same elements as rows×cols.
func (t Tensor) Reshape(rows, cols int) (Tensor, error) {
	if rows*cols != t.Rows*t.Cols {
		return Tensor{}, fmt.Errorf("reshape %d×%d to %d×%d", t.Rows, t.Cols, rows, cols)
	}
	return Tensor{Buf: t.Buf, Rows: rows, Cols: cols}, nil
}

func (t Tensor) String() string { return fmt.Sprintf("%d×%d %v", t.Rows, t.Cols, t.DType()) }
