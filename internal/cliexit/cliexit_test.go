package cliexit

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
)

func TestCode(t *testing.T) {
	var b bytes.Buffer
	if Code("x", nil, &b) != 0 || b.Len() != 0 {
		t.Error("nil error")
	}
	if got := Code("x", fmt.Errorf("wrapped: %w", Usage(errors.New("bad flag"))), &b); got != 2 || b.String() != "x: wrapped: bad flag\n" {
		t.Errorf("usage: %d %q", got, b.String())
	}
	b.Reset()
	if got := Code("x", errors.New("two\nlines"), &b); got != 1 || b.String() != "x: two lines\n" {
		t.Errorf("other: %d %q", got, b.String())
	}
	if Usage(nil) != nil {
		t.Error("Usage(nil) is not nil")
	}
}
