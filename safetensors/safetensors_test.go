package safetensors

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func readBack(t *testing.T, path string) *File {
	t.Helper()
	f, err := ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func sameTensor(a, b Tensor) bool {
	return a.Name == b.Name && a.DType == b.DType && len(a.Shape) == len(b.Shape) &&
		(len(a.Shape) == 0 || reflect.DeepEqual(a.Shape, b.Shape)) && bytes.Equal(a.Data, b.Data)
}

// Every dtype, scalars and empty tensors, in the order written.
func TestRoundTripAllDTypes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "t.safetensors")
	in := []Tensor{
		F32("f32", []int{2, 3}, []float32{1, 2, 3, 4, 5, float32(math.Inf(-1))}),
		BF16("bf16", []int{2}, []uint16{0x3f80, 0xc000}),
		I32("i32", []int{3}, []int32{-1, 0, math.MaxInt32}),
		F64("f64", []int{1, 2}, []float64{math.Pi, -1e300}),
		F64("scalar", []int{}, []float64{3.5}),
		I32("scalar_nil_shape", nil, []int32{42}),
		F32("empty", []int{0, 4}, nil),
		BF16("empty2", []int{3, 0}, []uint16{}), // two empty tensors share an offset
		{"f16", "F16", []int{2}, []byte{0x00, 0x3c, 0x00, 0xc0}},
		{"i64", "I64", []int{1}, binary.LittleEndian.AppendUint64(nil, 1<<40)},
		{"u8", "U8", []int{3}, []byte{0, 7, 255}},
		{"i8", "I8", []int{1}, []byte{0x80}},
		{"bool", "BOOL", []int{2}, []byte{1, 0}},
		{"i16", "I16", []int{1}, []byte{1, 2}},
		{"u16", "U16", []int{1}, []byte{1, 2}},
		{"u32", "U32", []int{1}, []byte{1, 2, 3, 4}},
		{"u64", "U64", []int{1}, []byte{1, 2, 3, 4, 5, 6, 7, 8}},
		{"f8", "F8_E4M3", []int{1}, []byte{0x38}},
		F32("empty_last", []int{0}, nil),
	}
	if err := WriteFile(path, nil, in); err != nil {
		t.Fatal(err)
	}
	f := readBack(t, path)
	if f.Meta != nil {
		t.Errorf("meta %v, want none", f.Meta)
	}
	if len(f.Tensors) != len(in) {
		t.Fatalf("%d tensors, want %d", len(f.Tensors), len(in))
	}
	for i, want := range in {
		if got := f.Tensors[i]; !sameTensor(got, want) {
			t.Errorf("tensor %d: got %+v, want %+v", i, got, want)
		}
		if got, ok := f.Get(want.Name); !ok || !sameTensor(got, want) {
			t.Errorf("Get(%q) = %+v, %v", want.Name, got, ok)
		}
	}
	if _, ok := f.Get("nope"); ok {
		t.Error("Get(nope) found something")
	}
	// Appending to one tensor's data must not overwrite the next one's.
	a := append(f.Tensors[0].Data, 9, 9, 9, 9)
	_ = a
	if !sameTensor(f.Tensors[1], in[1]) {
		t.Error("appending to a tensor's Data clobbered the next tensor")
	}
}

func TestMetadataRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.safetensors")
	meta := map[string]string{"seed": "7", "layout": "world 2", "quote\"d": "a\\b\n<&>", "ünï": "☃", "empty": ""}
	if err := WriteFile(path, meta, []Tensor{F32("x", []int{1}, []float32{1})}); err != nil {
		t.Fatal(err)
	}
	if f := readBack(t, path); !reflect.DeepEqual(f.Meta, meta) {
		t.Errorf("meta %q, want %q", f.Meta, meta)
	}
	// Metadata alone, without tensors, is a valid file too.
	if err := WriteFile(path, meta, nil); err != nil {
		t.Fatal(err)
	}
	if f := readBack(t, path); !reflect.DeepEqual(f.Meta, meta) || len(f.Tensors) != 0 {
		t.Errorf("got %+v", f)
	}
}

// The header is padded with spaces so that the data starts at a multiple of 8.
func TestHeaderPadding(t *testing.T) {
	dir := t.TempDir()
	for n := 1; n <= 16; n++ {
		path := filepath.Join(dir, "p.safetensors")
		name := strings.Repeat("n", n)
		if err := WriteFile(path, nil, []Tensor{BF16(name, []int{1}, []uint16{1})}); err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(path)
		hl := binary.LittleEndian.Uint64(b)
		h := b[8 : 8+hl]
		trimmed := bytes.TrimRight(h, " ")
		if hl%8 != 0 || len(h)-len(trimmed) >= 8 || !json.Valid(trimmed) || len(b) != 8+int(hl)+2 {
			t.Errorf("name of %d bytes: header length %d, header %q", n, hl, h)
		}
	}
}

// A byte-exact file, built by hand: metadata, a float32 vector, a bf16 scalar and an empty
// int32 tensor.
func TestGolden(t *testing.T) {
	path := filepath.Join(t.TempDir(), "g.safetensors")
	err := WriteFile(path, map[string]string{"k": "v"}, []Tensor{
		F32("x", []int{2}, []float32{1, -2}),
		BF16("s", []int{}, []uint16{0x3f80}),
		I32("e", []int{0}, nil),
	})
	if err != nil {
		t.Fatal(err)
	}
	// 188 bytes of JSON, padded with 4 spaces to 192 = 0xc0.
	h := `{"__metadata__":{"k":"v"},` +
		`"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},` +
		`"s":{"dtype":"BF16","shape":[],"data_offsets":[8,10]},` +
		`"e":{"dtype":"I32","shape":[0],"data_offsets":[10,10]}}` + "    "
	want := []byte{0xc0, 0, 0, 0, 0, 0, 0, 0}
	want = append(want, h...)
	want = append(want,
		0x00, 0x00, 0x80, 0x3f, // 1.0f
		0x00, 0x00, 0x00, 0xc0, // -2.0f
		0x80, 0x3f, // bf16 1.0
	)
	if len(h) != 192 {
		t.Fatalf("the hand-built header has %d bytes", len(h))
	}
	got, _ := os.ReadFile(path)
	if !bytes.Equal(got, want) {
		t.Errorf("got\n%q\nwant\n%q", got, want)
	}
	f, err := Parse(want)
	if err != nil || len(f.Tensors) != 3 || f.Tensors[2].Name != "e" || f.Meta["k"] != "v" {
		t.Errorf("Parse(golden) = %+v, %v", f, err)
	}
}

func TestMalformed(t *testing.T) {
	path := filepath.Join(t.TempDir(), "g.safetensors")
	if err := WriteFile(path, nil, []Tensor{F32("x", []int{2}, []float32{1, 2}), F32("y", []int{1}, []float32{3})}); err != nil {
		t.Fatal(err)
	}
	good, _ := os.ReadFile(path)
	file := func(h string, data int) []byte {
		b := binary.LittleEndian.AppendUint64(nil, uint64(len(h)))
		return append(append(b, h...), make([]byte, data)...)
	}
	x4 := `"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}`
	cases := map[string][]byte{
		"empty":             {},
		"short":             {1, 2},
		"truncated data":    good[:len(good)-1],
		"truncated header":  good[:20],
		"extra data":        append(bytes.Clone(good), 0),
		"huge header":       binary.LittleEndian.AppendUint64(nil, 1<<40),
		"bad json":          file(`{"x":`, 0),
		"not an object":     file(`[]`, 0),
		"trailing garbage":  file(`{`+x4+`}x`, 4),
		"duplicate name":    file(`{`+x4+`,`+x4+`}`, 4),
		"overlap":           file(`{`+x4+`,"y":{"dtype":"F32","shape":[1],"data_offsets":[2,6]}}`, 6),
		"same offsets":      file(`{`+x4+`,"y":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, 4),
		"gap":               file(`{"x":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, 8),
		"empty inside":      file(`{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"e":{"dtype":"F32","shape":[0],"data_offsets":[4,4]}}`, 8),
		"size mismatch":     file(`{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}`, 4),
		"out of range":      file(`{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, 4),
		"reversed":          file(`{"x":{"dtype":"U8","shape":[0],"data_offsets":[4,0]}}`, 4),
		"negative offset":   file(`{"x":{"dtype":"U8","shape":[4],"data_offsets":[-4,0]}}`, 4),
		"three offsets":     file(`{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}}`, 4),
		"unknown dtype":     file(`{"x":{"dtype":"Q4","shape":[2],"data_offsets":[0,4]}}`, 4),
		"negative dim":      file(`{"x":{"dtype":"U8","shape":[-1],"data_offsets":[0,0]}}`, 0),
		"overflowing shape": file(`{"x":{"dtype":"F64","shape":[4294967296,4294967296],"data_offsets":[0,0]}}`, 0),
		"missing shape":     file(`{"x":{"dtype":"F32","data_offsets":[0,4]}}`, 4),
		"unknown field":     file(`{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"strides":[1]}}`, 4),
		"metadata not str":  file(`{"__metadata__":{"k":1}}`, 0),
	}
	over := make([]byte, 8+MaxHeader+8) // a header over the limit, though inside the file
	binary.LittleEndian.PutUint64(over, MaxHeader+8)
	cases["header over limit"] = over
	for name, b := range cases {
		_, err := Parse(b)
		t.Logf("%s: %v", name, err)
		if err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	// Errors from ReadFile name the file and the tensor.
	bad := filepath.Join(t.TempDir(), "bad.safetensors")
	os.WriteFile(bad, cases["size mismatch"], 0o666)
	if _, err := ReadFile(bad); err == nil || !strings.Contains(err.Error(), bad) || !strings.Contains(err.Error(), `"x"`) {
		t.Errorf("error %v does not name the file and the tensor", err)
	}
	// Spaces after the object, and tensors listed out of data order, are fine.
	if _, err := Parse(file(`{"y":{"dtype":"U8","shape":[],"data_offsets":[4,5]},`+x4+`}   `, 5)); err != nil {
		t.Errorf("valid file rejected: %v", err)
	}
}

func TestWriterStreamsChunks(t *testing.T) {
	dir := t.TempDir()
	v := make([]float32, 1000)
	for i := range v {
		v[i] = float32(i) / 3
	}
	ref := filepath.Join(dir, "ref.safetensors")
	if err := WriteFile(ref, map[string]string{"a": "b"}, []Tensor{F32("v", []int{10, 100}, v), I32("e", []int{0}, nil), I32("i", []int{}, []int32{5})}); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "stream.safetensors")
	w, err := Create(path, map[string]string{"a": "b"}, []Spec{{"v", "F32", []int{10, 100}}, {"e", "I32", []int{0}}, {"i", "I32", nil}})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort() // a no-op after Close
	for i := 0; i < len(v); i += 37 {
		if err := w.Write("v", AppendF32(nil, v[i:min(i+37, len(v))])); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Write("e", nil); err != nil {
		t.Fatal(err)
	}
	if err := w.Write("i", AppendI32(nil, []int32{5})); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	w.Abort()
	a, _ := os.ReadFile(ref)
	b, _ := os.ReadFile(path)
	if !bytes.Equal(a, b) || len(a) == 0 {
		t.Error("streamed file differs from WriteFile's")
	}
	if _, err := os.Stat(path + ".tmp"); !os.IsNotExist(err) {
		t.Errorf("temporary file left: %v", err)
	}
	if err := w.Write("i", []byte{1}); err == nil {
		t.Error("write after Close accepted")
	}
	if err := w.Close(); err == nil {
		t.Error("second Close succeeded")
	}
}

func TestWriterErrorsLeaveNothing(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "w.safetensors")
	specs := []Spec{{"a", "F32", []int{2}}, {"b", "BF16", []int{3}}}
	fails := []struct {
		name  string
		run   func(w *Writer) error
		error string
	}{
		{"wrong order", func(w *Writer) error { return w.Write("b", make([]byte, 6)) }, `"b" written before "a" is complete (0 of 8 bytes)`},
		{"undeclared", func(w *Writer) error { return w.Write("c", make([]byte, 6)) }, `"c" was not declared`},
		{"too many in one", func(w *Writer) error { return w.Write("a", make([]byte, 9)) }, `tensor "a": 9 bytes is more than its 8`},
		{"too many in chunks", func(w *Writer) error {
			w.Write("a", make([]byte, 4))
			w.Write("a", make([]byte, 4))
			w.Write("b", make([]byte, 4))
			return w.Write("b", make([]byte, 4))
		}, `tensor "b": 8 bytes is more than its 6`},
		{"again after complete", func(w *Writer) error {
			w.Write("a", make([]byte, 8))
			return w.Write("a", make([]byte, 1))
		}, `tensor "a": 1 more bytes after its 8`},
		{"incomplete at Close", func(w *Writer) error {
			w.Write("a", make([]byte, 8))
			w.Write("b", make([]byte, 2))
			return w.Close()
		}, `tensor "b" has 2 of its 6 bytes`},
		{"aborted", func(w *Writer) error {
			w.Write("a", make([]byte, 8))
			w.Abort()
			return w.Close()
		}, `aborted`},
	}
	for _, c := range fails {
		w, err := Create(path, nil, specs)
		if err != nil {
			t.Fatal(err)
		}
		err = c.run(w)
		if err == nil || !strings.Contains(err.Error(), c.error) || !strings.Contains(err.Error(), path) {
			t.Errorf("%s: error %v, want one with %q and the path", c.name, err, c.error)
		}
		if err2 := w.Close(); err2 == nil {
			t.Errorf("%s: Close after an error succeeded", c.name)
		}
		if entries, _ := os.ReadDir(dir); len(entries) != 0 {
			t.Errorf("%s: left behind %v", c.name, entries)
		}
	}
	// A failed rewrite leaves an earlier file at the path untouched.
	if err := WriteFile(path, nil, []Tensor{F32("old", []int{1}, []float32{1})}); err != nil {
		t.Fatal(err)
	}
	old, _ := os.ReadFile(path)
	if err := WriteFile(path, nil, []Tensor{{"short", "F32", []int{2}, make([]byte, 4)}}); err == nil {
		t.Error("WriteFile of a short tensor succeeded")
	}
	if now, _ := os.ReadFile(path); !bytes.Equal(now, old) {
		t.Error("a failed write changed the existing file")
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("left behind %v", entries)
	}
	for name, specs := range map[string][]Spec{
		"duplicate":     {{"a", "F32", nil}, {"a", "F32", nil}},
		"unknown dtype": {{"a", "F7", nil}},
		"reserved name": {{"__metadata__", "F32", nil}},
		"empty name":    {{"", "F32", nil}},
		"bad utf-8":     {{"\xff", "F32", nil}},
		"negative dim":  {{"a", "F32", []int{-1}}},
	} {
		if _, err := Create(path, nil, specs); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := Create(path, map[string]string{"k": "\xff"}, nil); err == nil {
		t.Error("metadata that is not UTF-8 accepted")
	}
	if _, err := Create(filepath.Join(dir, "no", "such", "dir"), nil, nil); err == nil {
		t.Error("Create in a missing directory succeeded")
	}
}

func TestFloat32s(t *testing.T) {
	f16 := []byte{0x00, 0x3c, 0x00, 0xc0, 0x01, 0x00, 0x00, 0x80, 0x00, 0x7c, 0xff, 0x7b} // 1, -2, 2^-24, -0, +inf, 65504
	cases := []struct {
		t    Tensor
		want []float32
	}{
		{F32("f", []int{2}, []float32{1.5, -3}), []float32{1.5, -3}},
		{BF16("b", []int{3}, []uint16{0x3f80, 0xc040, 0x0000}), []float32{1, -3, 0}},
		{F64("d", []int{2}, []float64{0.1, 1e40}), []float32{0.1, float32(math.Inf(1))}},
		{Tensor{"h", "F16", []int{6}, f16}, []float32{1, -2, 1.0 / (1 << 24), float32(math.Copysign(0, -1)), float32(math.Inf(1)), 65504}},
	}
	for _, c := range cases {
		got, err := c.t.Float32s()
		if err != nil || len(got) != len(c.want) {
			t.Errorf("%s: %v, %v", c.t.Name, got, err)
			continue
		}
		for i := range got {
			if math.Float32bits(got[i]) != math.Float32bits(c.want[i]) {
				t.Errorf("%s[%d] = %v, want %v", c.t.Name, i, got[i], c.want[i])
			}
		}
	}
	if _, err := I32("ints", []int{1}, []int32{1}).Float32s(); err == nil || !strings.Contains(err.Error(), `"ints"`) {
		t.Errorf("I32: %v", err)
	}
	if _, err := (Tensor{"odd", "F32", []int{1}, make([]byte, 5)}).Float32s(); err == nil {
		t.Error("5 bytes of F32 accepted")
	}
}

// pythonWithNumpy finds a python3 that imports numpy, or "".
func pythonWithNumpy() string {
	for _, p := range []string{"python3", "/usr/bin/python3"} {
		if exec.Command(p, "-c", "import numpy").Run() == nil {
			return p
		}
	}
	return ""
}

// numpy reads what we write, through json + struct alone (skipped where there is no numpy).
func TestNumpyReads(t *testing.T) {
	py := pythonWithNumpy()
	if py == "" {
		t.Skip("no python3 with numpy")
	}
	path := filepath.Join(t.TempDir(), "n.safetensors")
	err := WriteFile(path, map[string]string{"k": "v"}, []Tensor{
		F32("w", []int{2, 2}, []float32{1, 2, 3, 4.5}),
		BF16("b", []int{3}, []uint16{0x3f80, 0xc040, 0x4049}),
		I32("i", []int{2}, []int32{-3, 9}),
		F64("d", []int{}, []float64{0.1}),
		F32("e", []int{0, 3}, nil),
		{"h", "F16", []int{1}, []byte{0x00, 0x3c}},
	})
	if err != nil {
		t.Fatal(err)
	}
	script := `import json, struct, sys, numpy as np
b = open(sys.argv[1], 'rb').read()
n, = struct.unpack('<Q', b[:8])
assert n % 8 == 0
h = json.loads(b[8:8+n]); d = b[8+n:]
out = {'__metadata__': h.pop('__metadata__')}
kinds = {'F32': '<f4', 'F64': '<f8', 'I32': '<i4', 'F16': '<f2', 'BF16': '<u2'}
for name, e in h.items():
    lo, hi = e['data_offsets']
    a = np.frombuffer(d[lo:hi], kinds[e['dtype']])
    if e['dtype'] == 'BF16':
        a = (a.astype(np.uint32) << 16).view(np.float32)
    a = a.reshape(e['shape'])
    out[name] = {'shape': list(a.shape), 'values': a.ravel().tolist()}
print(json.dumps(out, sort_keys=True))`
	out, err := exec.Command(py, "-c", script, path).CombinedOutput()
	if err != nil {
		t.Fatalf("python: %v\n%s", err, out)
	}
	want := `{"__metadata__": {"k": "v"}, "b": {"shape": [3], "values": [1.0, -3.0, 3.140625]}, ` +
		`"d": {"shape": [], "values": [0.1]}, "e": {"shape": [0, 3], "values": []}, "h": {"shape": [1], "values": [1.0]}, ` +
		`"i": {"shape": [2], "values": [-3, 9]}, "w": {"shape": [2, 2], "values": [1.0, 2.0, 3.0, 4.5]}}`
	if got := strings.TrimSpace(string(out)); got != want {
		t.Errorf("numpy read\n%s\nwant\n%s", got, want)
	}
}
