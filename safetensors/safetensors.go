// Package safetensors reads and writes the safetensors format of Hugging Face: an 8-byte
// little-endian header length, a JSON header (padded with spaces to a multiple of 8 bytes)
// that maps each tensor name to its dtype, shape and [begin, end) byte offsets in the data
// section, with optional string metadata under "__metadata__", then the raw little-endian
// data, tensors contiguous in the order declared. Files it writes load with
// safetensors.torch.load_file and with numpy.
package safetensors

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"unsafe"
)

// Tensor is one named tensor with its raw little-endian data.
type Tensor struct {
	Name  string
	DType string // "F32", "BF16", "I32", "F64", …
	Shape []int
	Data  []byte
}

// Spec declares a tensor of a Writer: its data comes later.
type Spec struct {
	Name  string
	DType string
	Shape []int
}

var dtypeSize = map[string]int{"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}

// maxHeader bounds the JSON header a reader accepts (the format's own limit is 100 MB).
const maxHeader = 100 << 20

func byteSize(dt string, shape []int) (int64, error) {
	sz, ok := dtypeSize[dt]
	if !ok {
		return 0, fmt.Errorf("unknown dtype %q", dt)
	}
	n := int64(sz)
	for _, d := range shape {
		if d < 0 {
			return 0, fmt.Errorf("negative dimension in shape %v", shape)
		}
		n *= int64(d)
	}
	return n, nil
}

func le() bool { x := uint16(1); return *(*byte)(unsafe.Pointer(&x)) == 1 }

func raw[T any](v []T) []byte {
	if len(v) == 0 {
		return []byte{}
	}
	if !le() {
		panic("safetensors: big-endian hosts are not supported")
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(v))), len(v)*int(unsafe.Sizeof(v[0])))
}

// F32 makes a float32 tensor (the data is copied).
func F32(name string, shape []int, v []float32) Tensor {
	return Tensor{name, "F32", shape, bytes.Clone(raw(v))}
}

// BF16 makes a bfloat16 tensor from raw bf16 bits.
func BF16(name string, shape []int, v []uint16) Tensor {
	return Tensor{name, "BF16", shape, bytes.Clone(raw(v))}
}

// I32 makes an int32 tensor.
func I32(name string, shape []int, v []int32) Tensor {
	return Tensor{name, "I32", shape, bytes.Clone(raw(v))}
}

// F64 makes a float64 tensor.
func F64(name string, shape []int, v []float64) Tensor {
	return Tensor{name, "F64", shape, bytes.Clone(raw(v))}
}

type entry struct {
	DType   string   `json:"dtype"`
	Shape   []int    `json:"shape"`
	Offsets [2]int64 `json:"data_offsets"`
}

// header builds the padded JSON header for specs (in order) and returns their sizes.
func header(meta map[string]string, specs []Spec) ([]byte, []int64, error) {
	h := map[string]any{}
	if len(meta) > 0 {
		h["__metadata__"] = meta
	}
	sizes := make([]int64, len(specs))
	var off int64
	for i, s := range specs {
		if s.Name == "" || s.Name == "__metadata__" {
			return nil, nil, fmt.Errorf("tensor name %q is not allowed", s.Name)
		}
		if _, dup := h[s.Name]; dup {
			return nil, nil, fmt.Errorf("tensor %q declared twice", s.Name)
		}
		n, err := byteSize(s.DType, s.Shape)
		if err != nil {
			return nil, nil, fmt.Errorf("tensor %q: %w", s.Name, err)
		}
		shape := s.Shape
		if shape == nil {
			shape = []int{}
		}
		h[s.Name] = entry{s.DType, shape, [2]int64{off, off + n}}
		sizes[i] = n
		off += n
	}
	b, err := json.Marshal(h)
	if err != nil {
		return nil, nil, err
	}
	for len(b)%8 != 0 {
		b = append(b, ' ')
	}
	return b, sizes, nil
}

// Writer streams tensors into a file whose header was written first. The file appears at
// its path only when Close succeeds.
type Writer struct {
	path, tmp string
	f         *os.File
	specs     []Spec
	sizes     []int64
	cur       int   // the tensor being written
	written   int64 // bytes of it so far
	err       error
}

// Create starts a file with every tensor declared up front.
func Create(path string, meta map[string]string, specs []Spec) (*Writer, error) {
	h, sizes, err := header(meta, specs)
	if err != nil {
		return nil, fmt.Errorf("safetensors %s: %w", path, err)
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return nil, fmt.Errorf("safetensors %s: %w", path, err)
	}
	w := &Writer{path: path, tmp: f.Name(), f: f, specs: specs, sizes: sizes}
	var n [8]byte
	binary.LittleEndian.PutUint64(n[:], uint64(len(h)))
	if _, err := f.Write(append(n[:], h...)); err != nil {
		w.Abort()
		return nil, fmt.Errorf("safetensors %s: %w", path, err)
	}
	w.skipEmpty()
	return w, nil
}

func (w *Writer) skipEmpty() {
	for w.cur < len(w.specs) && w.written == w.sizes[w.cur] {
		w.cur++
		w.written = 0
	}
}

// Write appends data to tensor name, which must be the one being written (tensors are
// written in declared order, each in one or more calls).
func (w *Writer) Write(name string, data []byte) error {
	if w.err != nil {
		return w.err
	}
	if len(data) == 0 {
		return nil // nothing to place (empty tensors are complete from the start)
	}
	fail := func(err error) error {
		w.err = fmt.Errorf("safetensors %s: %w", w.path, err)
		return w.err
	}
	if w.cur >= len(w.specs) {
		return fail(fmt.Errorf("tensor %q: every declared tensor is complete", name))
	}
	if s := w.specs[w.cur]; s.Name != name {
		return fail(fmt.Errorf("tensor %q written while %q is expected", name, s.Name))
	}
	if w.written+int64(len(data)) > w.sizes[w.cur] {
		return fail(fmt.Errorf("tensor %q: %d bytes is more than its %d", name, w.written+int64(len(data)), w.sizes[w.cur]))
	}
	if _, err := w.f.Write(data); err != nil {
		return fail(err)
	}
	w.written += int64(len(data))
	w.skipEmpty()
	return nil
}

// Close checks that every tensor is complete, syncs the file and moves it into place.
func (w *Writer) Close() error {
	if w.err == nil && w.cur < len(w.specs) {
		w.err = fmt.Errorf("safetensors %s: tensor %q has %d of its %d bytes", w.path, w.specs[w.cur].Name, w.written, w.sizes[w.cur])
	}
	if w.err != nil {
		w.Abort()
		return w.err
	}
	if err := w.f.Sync(); err != nil {
		w.Abort()
		return fmt.Errorf("safetensors %s: %w", w.path, err)
	}
	if err := w.f.Close(); err != nil {
		os.Remove(w.tmp)
		return fmt.Errorf("safetensors %s: %w", w.path, err)
	}
	if err := os.Rename(w.tmp, w.path); err != nil {
		os.Remove(w.tmp)
		return fmt.Errorf("safetensors %s: %w", w.path, err)
	}
	return nil
}

// Abort removes the unfinished file.
func (w *Writer) Abort() {
	w.f.Close()
	os.Remove(w.tmp)
	if w.err == nil {
		w.err = fmt.Errorf("safetensors %s: aborted", w.path)
	}
}

// WriteFile writes tensors (in order) and metadata to path.
func WriteFile(path string, meta map[string]string, tensors []Tensor) error {
	specs := make([]Spec, len(tensors))
	for i, t := range tensors {
		specs[i] = Spec{t.Name, t.DType, t.Shape}
	}
	w, err := Create(path, meta, specs)
	if err != nil {
		return err
	}
	for _, t := range tensors {
		if err := w.Write(t.Name, t.Data); err != nil {
			w.Abort()
			return err
		}
	}
	return w.Close()
}

// File is a whole safetensors file in memory.
type File struct {
	Meta    map[string]string
	Tensors []Tensor // in data order
}

// ReadFile reads and validates a file: a sane header, offsets that tile the data section
// without gaps or overlaps, sizes that match dtype × shape, unique names.
func ReadFile(path string) (*File, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	f, err := parse(b)
	if err != nil {
		return nil, fmt.Errorf("safetensors %s: %w", path, err)
	}
	return f, nil
}

func parse(b []byte) (*File, error) {
	if len(b) < 8 {
		return nil, errors.New("shorter than the 8-byte header length")
	}
	n := binary.LittleEndian.Uint64(b)
	if n > maxHeader || n > uint64(len(b)-8) {
		return nil, fmt.Errorf("header length %d does not fit the file's %d bytes", n, len(b))
	}
	var raw map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(b[8 : 8+n]))
	if err := dec.Decode(&raw); err != nil {
		return nil, fmt.Errorf("header: %w", err)
	}
	data := b[8+n:]
	f := &File{}
	for name, m := range raw {
		if name == "__metadata__" {
			if err := json.Unmarshal(m, &f.Meta); err != nil {
				return nil, fmt.Errorf("__metadata__: %w", err)
			}
			continue
		}
		var e entry
		if err := json.Unmarshal(m, &e); err != nil {
			return nil, fmt.Errorf("tensor %q: %w", name, err)
		}
		size, err := byteSize(e.DType, e.Shape)
		if err != nil {
			return nil, fmt.Errorf("tensor %q: %w", name, err)
		}
		if e.Offsets[1]-e.Offsets[0] != size || e.Offsets[0] < 0 || e.Offsets[1] > int64(len(data)) {
			return nil, fmt.Errorf("tensor %q: offsets %v for %d bytes of %s %v in a %d-byte data section", name, e.Offsets, size, e.DType, e.Shape, len(data))
		}
		f.Tensors = append(f.Tensors, Tensor{name, e.DType, e.Shape, data[e.Offsets[0]:e.Offsets[1]]})
	}
	sort.Slice(f.Tensors, func(i, j int) bool {
		return offsetOf(data, f.Tensors[i]) < offsetOf(data, f.Tensors[j])
	})
	var next int64
	for _, t := range f.Tensors {
		if off := offsetOf(data, t); off != next {
			return nil, fmt.Errorf("tensor %q starts at %d, expected %d (gap or overlap)", t.Name, off, next)
		}
		next += int64(len(t.Data))
	}
	if next != int64(len(data)) {
		return nil, fmt.Errorf("data section has %d bytes, tensors cover %d", len(data), next)
	}
	return f, nil
}

// offsetOf is where t's data starts in the data section it was sliced from.
func offsetOf(data []byte, t Tensor) int64 { return int64(cap(data) - cap(t.Data)) }

// Get finds a tensor by name.
func (f *File) Get(name string) (Tensor, bool) {
	for _, t := range f.Tensors {
		if t.Name == name {
			return t, true
		}
	}
	return Tensor{}, false
}

// Float32s widens F32, BF16 and F64 data to float32 values.
func (t Tensor) Float32s() ([]float32, error) {
	switch t.DType {
	case "F32":
		out := make([]float32, len(t.Data)/4)
		for i := range out {
			out[i] = math.Float32frombits(binary.LittleEndian.Uint32(t.Data[4*i:]))
		}
		return out, nil
	case "BF16":
		out := make([]float32, len(t.Data)/2)
		for i := range out {
			out[i] = math.Float32frombits(uint32(binary.LittleEndian.Uint16(t.Data[2*i:])) << 16)
		}
		return out, nil
	case "F64":
		out := make([]float32, len(t.Data)/8)
		for i := range out {
			out[i] = float32(math.Float64frombits(binary.LittleEndian.Uint64(t.Data[8*i:])))
		}
		return out, nil
	}
	return nil, fmt.Errorf("tensor %q: %s is not a float type", t.Name, t.DType)
}
