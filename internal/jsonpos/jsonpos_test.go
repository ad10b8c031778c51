package jsonpos

import (
	"encoding/json"
	"errors"
	"testing"
)

func TestOffsetLineCol(t *testing.T) {
	data := []byte("{\n  \"a\": 1,\n  \"b\": x\n}")
	var v map[string]int
	off, ok := Offset(json.Unmarshal(data, &v))
	if !ok {
		t.Fatal("a syntax error has no offset")
	}
	if line, col := LineCol(data, off); line != 3 || col != 9 {
		t.Errorf("line %d col %d, want 3, 9", line, col)
	}
	if _, ok := Offset(errors.New("other")); ok {
		t.Error("an unrelated error has an offset")
	}
}
