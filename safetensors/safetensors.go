// Package safetensors reads and writes the safetensors format of Hugging Face.
//
// A file is an 8-byte little-endian header length N, then N bytes of JSON header, then
// the data section. The header is one JSON object that maps each tensor name to
// {"dtype", "shape", "data_offsets"}, where data_offsets is [begin, end) in bytes relative
// to the start of the data section, plus an optional "__metadata__" object of string to
// string. The data is raw little-endian, row-major; tensors tile the data section with no
// gaps or overlaps. Writers pad the header with spaces to a multiple of 8 bytes so that the
// data section is aligned.
//
// Files written here load with safetensors.torch.load_file and with numpy alone
// (json + struct + np.frombuffer). The header lists __metadata__ first, then the tensors in
// the order they were declared, which is also their order in the data section.
package safetensors

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"unicode/utf8"
)

// Tensor is one named tensor with its raw little-endian, row-major data.
type Tensor struct {
	Name  string
	DType string // "F32", "BF16", "I32", "F64", … (see DTypeSize)
	Shape []int  // empty for a scalar
	Data  []byte
}

// Spec declares a tensor of a Writer; its data comes later through Write.
type Spec struct {
	Name  string
	DType string
	Shape []int
}

// dtypeSize holds the bytes per element of the format's byte-sized dtypes.
var dtypeSize = map[string]int{
	"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1,
	"U16": 2, "I16": 2, "F16": 2, "BF16": 2,
	"U32": 4, "I32": 4, "F32": 4,
	"U64": 8, "I64": 8, "F64": 8,
}

// DTypeSize is the size in bytes of one element of dtype, and whether the dtype is known.
func DTypeSize(dtype string) (int, bool) {
	n, ok := dtypeSize[dtype]
	return n, ok
}

// MaxHeader is the largest JSON header accepted or written: the limit of the reference
// implementation (100 MB).
const MaxHeader = 100_000_000

const metaKey = "__metadata__"

// ByteSize is the data size of a tensor of dtype and shape.
func ByteSize(dtype string, shape []int) (int64, error) {
	sz, ok := dtypeSize[dtype]
	if !ok {
		return 0, fmt.Errorf("unknown dtype %q", dtype)
	}
	n := int64(sz)
	for _, d := range shape {
		if d < 0 {
			return 0, fmt.Errorf("negative dimension in shape %v", shape)
		}
		if d != 0 && n > math.MaxInt64/int64(d) {
			return 0, fmt.Errorf("shape %v of %s overflows", shape, dtype)
		}
		n *= int64(d)
	}
	return n, nil
}

// AppendF32 appends v to dst as little-endian float32 (for streaming chunks to a Writer).
func AppendF32(dst []byte, v []float32) []byte {
	for _, x := range v {
		dst = binary.LittleEndian.AppendUint32(dst, math.Float32bits(x))
	}
	return dst
}

// AppendBF16 appends raw bfloat16 bits to dst, little-endian.
func AppendBF16(dst []byte, v []uint16) []byte {
	for _, x := range v {
		dst = binary.LittleEndian.AppendUint16(dst, x)
	}
	return dst
}

// AppendI32 appends v to dst as little-endian int32.
func AppendI32(dst []byte, v []int32) []byte {
	for _, x := range v {
		dst = binary.LittleEndian.AppendUint32(dst, uint32(x))
	}
	return dst
}

// AppendF64 appends v to dst as little-endian float64.
func AppendF64(dst []byte, v []float64) []byte {
	for _, x := range v {
		dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(x))
	}
	return dst
}

// F32 makes a float32 tensor (the values are copied).
func F32(name string, shape []int, v []float32) Tensor {
	return Tensor{name, "F32", shape, AppendF32(make([]byte, 0, 4*len(v)), v)}
}

// BF16 makes a bfloat16 tensor from raw bf16 bits.
func BF16(name string, shape []int, v []uint16) Tensor {
	return Tensor{name, "BF16", shape, AppendBF16(make([]byte, 0, 2*len(v)), v)}
}

// I32 makes an int32 tensor.
func I32(name string, shape []int, v []int32) Tensor {
	return Tensor{name, "I32", shape, AppendI32(make([]byte, 0, 4*len(v)), v)}
}

// F64 makes a float64 tensor.
func F64(name string, shape []int, v []float64) Tensor {
	return Tensor{name, "F64", shape, AppendF64(make([]byte, 0, 8*len(v)), v)}
}

// quote writes s as a JSON string (without HTML escaping, so names stay readable).
func quote(b *bytes.Buffer, s string) {
	var q bytes.Buffer
	enc := json.NewEncoder(&q)
	enc.SetEscapeHTML(false)
	enc.Encode(s) // a valid UTF-8 string always encodes
	b.Write(bytes.TrimSuffix(q.Bytes(), []byte("\n")))
}

// header builds the padded JSON header for specs (in order) and returns their sizes.
func header(meta map[string]string, specs []Spec) ([]byte, []int64, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	if len(meta) > 0 {
		keys := make([]string, 0, len(meta))
		for k, v := range meta {
			if !utf8.ValidString(k) || !utf8.ValidString(v) {
				return nil, nil, fmt.Errorf("metadata %q: not valid UTF-8", k)
			}
			keys = append(keys, k)
		}
		sort.Strings(keys)
		quote(&b, metaKey)
		b.WriteString(":{")
		for i, k := range keys {
			if i > 0 {
				b.WriteByte(',')
			}
			quote(&b, k)
			b.WriteByte(':')
			quote(&b, meta[k])
		}
		b.WriteByte('}')
	}
	sizes := make([]int64, len(specs))
	seen := make(map[string]bool, len(specs))
	var off int64
	for i, s := range specs {
		switch {
		case s.Name == "" || s.Name == metaKey:
			return nil, nil, fmt.Errorf("tensor name %q is not allowed", s.Name)
		case !utf8.ValidString(s.Name):
			return nil, nil, fmt.Errorf("tensor name %q is not valid UTF-8", s.Name)
		case seen[s.Name]:
			return nil, nil, fmt.Errorf("tensor %q declared twice", s.Name)
		}
		seen[s.Name] = true
		n, err := ByteSize(s.DType, s.Shape)
		if err != nil {
			return nil, nil, fmt.Errorf("tensor %q: %w", s.Name, err)
		}
		if off > math.MaxInt64-n {
			return nil, nil, fmt.Errorf("tensor %q: data section overflows", s.Name)
		}
		if b.Len() > 1 {
			b.WriteByte(',')
		}
		quote(&b, s.Name)
		b.WriteString(`:{"dtype":`)
		quote(&b, s.DType)
		b.WriteString(`,"shape":[`)
		for j, d := range s.Shape {
			if j > 0 {
				b.WriteByte(',')
			}
			fmt.Fprint(&b, d)
		}
		fmt.Fprintf(&b, `],"data_offsets":[%d,%d]}`, off, off+n)
		sizes[i] = n
		off += n
	}
	b.WriteByte('}')
	for b.Len()%8 != 0 {
		b.WriteByte(' ')
	}
	if b.Len() > MaxHeader {
		return nil, nil, fmt.Errorf("header of %d bytes is over the format's %d", b.Len(), MaxHeader)
	}
	return b.Bytes(), sizes, nil
}

// Writer streams tensors into a file whose header, declaring every tensor, is written
// first. Data goes to path+".tmp", which Close syncs and renames to path; on any error the
// temporary file is removed, so path holds either nothing new or a complete file.
// Deferring Abort is safe: after a successful Close it does nothing.
type Writer struct {
	path, tmp string
	f         *os.File
	bw        *bufio.Writer
	specs     []Spec
	sizes     []int64
	cur       int   // the tensor being written
	written   int64 // bytes of it so far
	err       error // sticky: the first error, after which the temporary file is gone
	done      bool  // closed or aborted
}

// Create starts a file with every tensor declared up front, in data order.
func Create(path string, meta map[string]string, specs []Spec) (*Writer, error) {
	h, sizes, err := header(meta, specs)
	if err != nil {
		return nil, fmt.Errorf("safetensors %s: %w", path, err)
	}
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o666)
	if err != nil {
		return nil, fmt.Errorf("safetensors %s: %w", path, err)
	}
	w := &Writer{path: path, tmp: tmp, f: f, bw: bufio.NewWriterSize(f, 1<<20), specs: specs, sizes: sizes}
	var n [8]byte
	binary.LittleEndian.PutUint64(n[:], uint64(len(h)))
	w.bw.Write(n[:])
	if _, err := w.bw.Write(h); err != nil {
		return nil, w.fail(err)
	}
	w.skipEmpty()
	return w, nil
}

// fail records err (with the file's name), removes the temporary file and returns it.
func (w *Writer) fail(err error) error {
	if w.err == nil {
		w.err = fmt.Errorf("safetensors %s: %w", w.path, err)
	}
	w.discard()
	return w.err
}

func (w *Writer) discard() {
	if !w.done {
		w.done = true
		w.f.Close()
		os.Remove(w.tmp)
	}
}

// skipEmpty moves past complete tensors (those of zero bytes are complete from the start).
func (w *Writer) skipEmpty() {
	for w.cur < len(w.specs) && w.written == w.sizes[w.cur] {
		w.cur++
		w.written = 0
	}
}

func (w *Writer) index(name string) int {
	for i, s := range w.specs {
		if s.Name == name {
			return i
		}
	}
	return -1
}

// Write appends data to tensor name, which must be the one being written: tensors are
// written in declared order, each in one or more chunks that add up to its size. An empty
// chunk does nothing. After an error the file is gone and every later call returns that error.
func (w *Writer) Write(name string, data []byte) error {
	if w.err != nil {
		return w.err
	}
	if w.done {
		return fmt.Errorf("safetensors %s: tensor %q: write after Close", w.path, name)
	}
	if len(data) == 0 {
		return nil
	}
	if w.cur >= len(w.specs) || w.specs[w.cur].Name != name {
		switch i := w.index(name); {
		case i < 0:
			return w.fail(fmt.Errorf("tensor %q was not declared", name))
		case i < w.cur:
			return w.fail(fmt.Errorf("tensor %q: %d more bytes after its %d", name, len(data), w.sizes[i]))
		default:
			return w.fail(fmt.Errorf("tensor %q written before %q is complete (%d of %d bytes)", name, w.specs[w.cur].Name, w.written, w.sizes[w.cur]))
		}
	}
	if total := w.written + int64(len(data)); total > w.sizes[w.cur] {
		return w.fail(fmt.Errorf("tensor %q: %d bytes is more than its %d", name, total, w.sizes[w.cur]))
	}
	if _, err := w.bw.Write(data); err != nil {
		return w.fail(fmt.Errorf("tensor %q: %w", name, err))
	}
	w.written += int64(len(data))
	w.skipEmpty()
	return nil
}

// Close checks that every tensor is complete, syncs the file and renames it to its path.
func (w *Writer) Close() error {
	if w.err != nil {
		return w.err
	}
	if w.done {
		return fmt.Errorf("safetensors %s: already closed", w.path)
	}
	if w.cur < len(w.specs) {
		return w.fail(fmt.Errorf("tensor %q has %d of its %d bytes", w.specs[w.cur].Name, w.written, w.sizes[w.cur]))
	}
	if err := w.bw.Flush(); err != nil {
		return w.fail(err)
	}
	if err := w.f.Sync(); err != nil {
		return w.fail(err)
	}
	if err := w.f.Close(); err != nil {
		return w.fail(err)
	}
	if err := os.Rename(w.tmp, w.path); err != nil {
		return w.fail(err)
	}
	w.done = true
	if d, err := os.Open(filepath.Dir(w.path)); err == nil { // make the rename durable
		d.Sync()
		d.Close()
	}
	return nil
}

// Abort gives up the file, removing the temporary one. It does nothing after Close.
func (w *Writer) Abort() {
	if !w.done && w.err == nil {
		w.err = fmt.Errorf("safetensors %s: aborted", w.path)
	}
	w.discard()
}

// WriteFile writes tensors (in order) and metadata to path through a Writer.
func WriteFile(path string, meta map[string]string, tensors []Tensor) error {
	specs := make([]Spec, len(tensors))
	for i, t := range tensors {
		specs[i] = Spec{t.Name, t.DType, t.Shape}
	}
	w, err := Create(path, meta, specs)
	if err != nil {
		return err
	}
	defer w.Abort()
	for _, t := range tensors {
		if err := w.Write(t.Name, t.Data); err != nil {
			return err
		}
	}
	return w.Close()
}

// File is a whole safetensors file in memory.
type File struct {
	Meta    map[string]string // nil when the file has no __metadata__
	Tensors []Tensor          // in data order; Data slices share one buffer
}

// ReadFile reads and validates a whole file: a sane header length, a JSON object with
// unique names, known dtypes, sizes that match dtype × shape, and offsets that tile the data
// section exactly, without gaps or overlaps.
func ReadFile(path string) (*File, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	f, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("safetensors %s: %w", path, err)
	}
	return f, nil
}

type entry struct {
	DType   *string  `json:"dtype"`
	Shape   *[]int   `json:"shape"`
	Offsets *[]int64 `json:"data_offsets"`
}

type placed struct {
	t          Tensor
	begin, end int64
}

// Parse decodes and validates a whole file held in b; the tensors' Data alias b.
func Parse(b []byte) (*File, error) {
	if len(b) < 8 {
		return nil, fmt.Errorf("%d bytes is shorter than the 8-byte header length", len(b))
	}
	n := binary.LittleEndian.Uint64(b)
	if n > MaxHeader {
		return nil, fmt.Errorf("header length %d is over the format's limit of %d", n, MaxHeader)
	}
	if n > uint64(len(b)-8) {
		return nil, fmt.Errorf("header length %d does not fit the file's %d bytes", n, len(b))
	}
	hdr, data := b[8:8+n], b[8+n:]
	f := &File{}
	var ts []placed
	err := parseHeader(hdr, func(name string, raw json.RawMessage) error {
		if name == metaKey {
			if err := json.Unmarshal(raw, &f.Meta); err != nil {
				return fmt.Errorf("%s: %w", metaKey, err)
			}
			return nil
		}
		var e entry
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&e); err != nil {
			return fmt.Errorf("tensor %q: %w", name, err)
		}
		if e.DType == nil || e.Shape == nil || e.Offsets == nil {
			return fmt.Errorf("tensor %q: needs dtype, shape and data_offsets", name)
		}
		size, err := ByteSize(*e.DType, *e.Shape)
		if err != nil {
			return fmt.Errorf("tensor %q: %w", name, err)
		}
		off := *e.Offsets
		if len(off) != 2 {
			return fmt.Errorf("tensor %q: data_offsets %v is not [begin, end]", name, off)
		}
		if off[0] < 0 || off[1] < off[0] || off[1] > int64(len(data)) {
			return fmt.Errorf("tensor %q: data_offsets %v out of the %d-byte data section", name, off, len(data))
		}
		if off[1]-off[0] != size {
			return fmt.Errorf("tensor %q: data_offsets %v hold %d bytes, %s %v needs %d", name, off, off[1]-off[0], *e.DType, *e.Shape, size)
		}
		ts = append(ts, placed{Tensor{name, *e.DType, *e.Shape, data[off[0]:off[1]:off[1]]}, off[0], off[1]})
		return nil
	})
	if err != nil {
		return nil, err
	}
	// Stable: zero-byte tensors that share an offset keep their header order.
	sort.SliceStable(ts, func(i, j int) bool { return ts[i].begin < ts[j].begin })
	var next int64
	for _, p := range ts {
		if p.begin != next {
			what := "overlaps the tensor before it"
			if p.begin > next {
				what = "leaves a gap"
			}
			return nil, fmt.Errorf("tensor %q: data_offsets [%d,%d] %s (expected to start at %d)", p.t.Name, p.begin, p.end, what, next)
		}
		next = p.end
		f.Tensors = append(f.Tensors, p.t)
	}
	if next != int64(len(data)) {
		return nil, fmt.Errorf("data section has %d bytes, tensors cover %d", len(data), next)
	}
	return f, nil
}

// parseHeader walks the header's top-level object, calling fn for each key in order,
// rejecting duplicate keys and anything but spaces after the object.
func parseHeader(hdr []byte, fn func(string, json.RawMessage) error) error {
	if !bytes.HasPrefix(hdr, []byte("{")) {
		return errors.New("header does not start with '{'")
	}
	dec := json.NewDecoder(bytes.NewReader(hdr))
	bad := func(err error) error { return fmt.Errorf("header: %w", err) }
	if _, err := dec.Token(); err != nil {
		return bad(err)
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return bad(err)
		}
		name := tok.(string) // object keys are strings
		if seen[name] {
			return fmt.Errorf("header: %q appears twice", name)
		}
		seen[name] = true
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return bad(fmt.Errorf("%q: %w", name, err))
		}
		if err := fn(name, raw); err != nil {
			return err
		}
	}
	if _, err := dec.Token(); err != nil { // the closing '}'
		return bad(err)
	}
	rest := hdr[dec.InputOffset():]
	if len(strings.TrimLeft(string(rest), " \t\r\n")) != 0 {
		return fmt.Errorf("header: %q after the JSON object", truncate(rest))
	}
	return nil
}

func truncate(b []byte) string {
	if len(b) > 16 {
		return string(b[:16]) + "…"
	}
	return string(b)
}

// Get finds a tensor by name.
func (f *File) Get(name string) (Tensor, bool) {
	for _, t := range f.Tensors {
		if t.Name == name {
			return t, true
		}
	}
	return Tensor{}, false
}

// Float32s converts F32, BF16 and F16 data (exactly) and F64 data (rounded) to float32.
func (t Tensor) Float32s() ([]float32, error) {
	size, ok := dtypeSize[t.DType]
	if !ok || len(t.Data)%size != 0 {
		return nil, fmt.Errorf("tensor %q: %d bytes of %s", t.Name, len(t.Data), t.DType)
	}
	out := make([]float32, len(t.Data)/size)
	d := t.Data
	switch t.DType {
	case "F32":
		for i := range out {
			out[i] = math.Float32frombits(binary.LittleEndian.Uint32(d[4*i:]))
		}
	case "BF16":
		for i := range out {
			out[i] = math.Float32frombits(uint32(binary.LittleEndian.Uint16(d[2*i:])) << 16)
		}
	case "F16":
		for i := range out {
			out[i] = halfToFloat(binary.LittleEndian.Uint16(d[2*i:]))
		}
	case "F64":
		for i := range out {
			out[i] = float32(math.Float64frombits(binary.LittleEndian.Uint64(d[8*i:])))
		}
	default:
		return nil, fmt.Errorf("tensor %q: %s is not a float type", t.Name, t.DType)
	}
	return out, nil
}

// halfToFloat widens IEEE binary16 bits to float32.
func halfToFloat(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h) & 0x3ff
	switch {
	case exp == 0x1f: // inf, nan
		return math.Float32frombits(sign | 0x7f800000 | mant<<13)
	case exp == 0: // zero, subnormal: mant × 2^-24
		v := float32(mant) * (1.0 / (1 << 24))
		if sign != 0 {
			v = -v
		}
		return v
	}
	return math.Float32frombits(sign | (exp+112)<<23 | mant<<13)
}
