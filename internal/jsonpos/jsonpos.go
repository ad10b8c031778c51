// Package jsonpos finds where in a JSON document encoding/json's error is, so that an
// error about an input file can name the line.
package jsonpos

import (
	"bytes"
	"encoding/json"
	"errors"
)

// Offset is the byte offset that a syntax or type error carries, or false for other errors.
func Offset(err error) (int64, bool) {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return se.Offset, true
	case errors.As(err, &te):
		return te.Offset, true
	}
	return 0, false
}

// LineCol is the 1-based line and column of offset off in data (clamped to data).
func LineCol(data []byte, off int64) (line, col int) {
	off = min(max(off, 0), int64(len(data)))
	line = 1 + bytes.Count(data[:off], []byte("\n"))
	col = int(off) - bytes.LastIndexByte(data[:off], '\n')
	return line, col
}
