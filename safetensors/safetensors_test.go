package safetensors

import (
	"bytes"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "t.safetensors")
	in := []Tensor{
		F32("a", []int{2, 3}, []float32{1, 2, 3, 4, 5, -6}),
		BF16("b", []int{2}, []uint16{0x3f80, 0xc000}),
		I32("ids", []int{3}, []int32{-1, 0, 7}),
		F64("scalar", []int{}, []float64{3.5}),
		F32("empty", []int{0, 4}, nil),
	}
	meta := map[string]string{"seed": "7", "layout": "world 2"}
	if err := WriteFile(path, meta, in); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	if n := binary.LittleEndian.Uint64(b); n%8 != 0 {
		t.Errorf("header length %d is not a multiple of 8", n)
	}
	f, err := ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if f.Meta["seed"] != "7" || f.Meta["layout"] != "world 2" || len(f.Tensors) != len(in) {
		t.Fatalf("meta %v, %d tensors", f.Meta, len(f.Tensors))
	}
	for i, want := range in {
		got := f.Tensors[i] // file order is write order
		if got.Name != want.Name || got.DType != want.DType || !bytes.Equal(got.Data, want.Data) || len(got.Shape) != len(want.Shape) {
			t.Errorf("tensor %d: got %+v, want %+v", i, got, want)
		}
	}
	v, err := f.Tensors[1].Float32s()
	if err != nil || v[0] != 1 || v[1] != -2 {
		t.Errorf("bf16 values %v, %v", v, err)
	}
	if _, ok := f.Get("ids"); !ok {
		t.Error("Get(ids) failed")
	}
}

// A byte-exact file for one 2-element float32 tensor, built by hand.
func TestGolden(t *testing.T) {
	path := filepath.Join(t.TempDir(), "g.safetensors")
	if err := WriteFile(path, nil, []Tensor{F32("x", []int{2}, []float32{1, 2})}); err != nil {
		t.Fatal(err)
	}
	h := `{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`
	for len(h)%8 != 0 {
		h += " "
	}
	want := binary.LittleEndian.AppendUint64(nil, uint64(len(h)))
	want = append(want, h...)
	want = append(want, 0, 0, 0x80, 0x3f, 0, 0, 0, 0x40)
	got, _ := os.ReadFile(path)
	if !bytes.Equal(got, want) {
		t.Errorf("got\n%q\nwant\n%q", got, want)
	}
}

func TestMalformed(t *testing.T) {
	good := func() []byte {
		path := filepath.Join(t.TempDir(), "g")
		WriteFile(path, nil, []Tensor{F32("x", []int{2}, []float32{1, 2}), F32("y", []int{1}, []float32{3})})
		b, _ := os.ReadFile(path)
		return b
	}
	hdr := func(h string, data int) []byte {
		b := binary.LittleEndian.AppendUint64(nil, uint64(len(h)))
		return append(append(b, h...), make([]byte, data)...)
	}
	cases := map[string][]byte{
		"short":       {1, 2},
		"truncated":   good()[:len(good())-1],
		"huge header": binary.LittleEndian.AppendUint64(nil, 1<<40),
		"bad json":    hdr(`{"x":`, 0),
		"overlap":     hdr(`{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"y":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, 4),
		"gap":         hdr(`{"x":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, 8),
		"size":        hdr(`{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}`, 4),
		"dtype":       hdr(`{"x":{"dtype":"Q4","shape":[2],"data_offsets":[0,4]}}`, 4),
	}
	for name, b := range cases {
		if _, err := parse(b); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestWriterErrorsLeaveNothing(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "w.safetensors")
	specs := []Spec{{"a", "F32", []int{2}}, {"b", "BF16", []int{3}}}
	w, err := Create(path, nil, specs)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Write("b", make([]byte, 6)); err == nil || !strings.Contains(err.Error(), `"b" written while "a" is expected`) {
		t.Errorf("out of order: %v", err)
	}
	if err := w.Close(); err == nil {
		t.Error("Close after an error succeeded")
	}
	w, _ = Create(path, nil, specs)
	w.Write("a", make([]byte, 4))
	w.Write("a", make([]byte, 4)) // in two chunks
	if err := w.Write("b", make([]byte, 8)); err == nil {
		t.Error("too many bytes accepted")
	}
	w.Abort()
	w, _ = Create(path, nil, specs)
	w.Write("a", make([]byte, 8))
	if err := w.Close(); err == nil || !strings.Contains(err.Error(), `tensor "b" has 0 of its 6 bytes`) {
		t.Errorf("incomplete: %v", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("left behind: %v", entries)
	}
	if _, err := Create(path, nil, []Spec{{"a", "F32", nil}, {"a", "F32", nil}}); err == nil {
		t.Error("duplicate names accepted")
	}
}

// numpy reads what we write (skipped where python3 has no numpy).
func TestNumpyReads(t *testing.T) {
	if exec.Command("python3", "-c", "import numpy").Run() != nil {
		t.Skip("python3 with numpy is not available")
	}
	path := filepath.Join(t.TempDir(), "n.safetensors")
	if err := WriteFile(path, map[string]string{"k": "v"}, []Tensor{F32("w", []int{2, 2}, []float32{1, 2, 3, 4.5}), I32("i", []int{2}, []int32{-3, 9})}); err != nil {
		t.Fatal(err)
	}
	script := `import json, struct, sys, numpy as np
b = open(sys.argv[1], 'rb').read(); n = struct.unpack('<Q', b[:8])[0]; h = json.loads(b[8:8+n]); d = b[8+n:]
w = h['w']; a = np.frombuffer(d[w['data_offsets'][0]:w['data_offsets'][1]], '<f4').reshape(w['shape'])
i = h['i']; c = np.frombuffer(d[i['data_offsets'][0]:i['data_offsets'][1]], '<i4')
print(a.sum(), a[1, 1], c.tolist(), h['__metadata__']['k'])`
	out, err := exec.Command("python3", "-c", script, path).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "10.5 4.5 [-3, 9] v" {
		t.Errorf("numpy read: %q, %v", out, err)
	}
}
