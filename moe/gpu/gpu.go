// Package gpu is the GPU device of moe: tensors in device memory, kernels compiled by NVRTC
// at first use (kernels.cu), GEMMs through cuBLAS, all work on one stream, shared with
// the NCCL communicators so that compute and collectives run in issue order.
package gpu

import (
	_ "embed"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"unsafe"

	"github.com/moerun/moerun/comm"
	"github.com/moerun/moerun/cuda"
	"github.com/moerun/moerun/dtype"
	"github.com/moerun/moerun/moe"
	"github.com/moerun/moerun/moe/router"
)

//go:embed kernels.cu
var kernelSource string

// Ops is one GPU with its stream, cuBLAS handle and kernels. Calls enqueue work and
// return; Sync waits. Use it from the goroutine that made the device current.
type Ops struct {
	dev    *cuda.Device
	stream *cuda.Stream
	blas   *cuda.Blas
	mod    *cuda.Module
	fn     map[string]*cuda.Function
	// scratch holds intermediate tensors by purpose, grown as needed and kept, so that a
	// forward pass allocates nothing once the sizes have been seen.
	scratch map[string]moe.Tensor
	consts  map[string]deviceConst
	// Libraries names NVRTC and cuBLAS as loaded, for the worker to print once.
	Libraries string
	name      string
	cc        int
	mma       mmaKernel
	// side is the second stream (stream is side inside Beside); it and marks are made at
	// the first Beside.
	side  *cuda.Stream
	marks []*cuda.Event
	next  int
}

var _ moe.Overlapper = (*Ops)(nil)

// besideMarks is how many events Beside cycles through: a mark is awaited by the caller
// within the next sub-batch (two Beside calls, four events), long before it comes round.
const besideMarks = 16

// Beside queues f's work on a second stream that starts once everything on the main
// stream so far has run (cuBLAS follows), and returns an event at its end for Await.
// Host waits inside f (Download, Sync) wait for the second stream only.
func (o *Ops) Beside(f func() error) (moe.Mark, error) {
	if o.side != nil && o.stream == o.side {
		return nil, errors.New("gpu: Beside inside Beside")
	}
	if o.side == nil {
		s, err := o.dev.NewStream()
		if err != nil {
			return nil, err
		}
		marks := make([]*cuda.Event, 0, besideMarks)
		for range besideMarks {
			e, err := o.dev.NewEvent()
			if err != nil {
				for _, m := range marks {
					m.Destroy()
				}
				s.Destroy()
				return nil, err
			}
			marks = append(marks, e)
		}
		o.side, o.marks = s, marks
	}
	main := o.stream
	start := o.mark()
	if err := start.Record(o.stream); err != nil {
		return nil, err
	}
	if err := o.side.WaitEvent(start); err != nil {
		return nil, err
	}
	if err := o.blas.SetStream(o.side); err != nil {
		return nil, err
	}
	ferr := func() error {
		o.stream = o.side
		defer func() { o.stream = main }() // even if f never returns (runtime.Goexit)
		return f()
	}()
	if err := o.blas.SetStream(main); err != nil {
		return nil, errors.Join(ferr, err)
	}
	if ferr != nil {
		return nil, ferr
	}
	end := o.mark()
	if err := end.Record(o.side); err != nil {
		return nil, err
	}
	return end, nil
}

// Await makes the main stream's later work wait for a mark of Beside.
func (o *Ops) Await(m moe.Mark) error {
	e, ok := m.(*cuda.Event)
	if !ok || o.side == nil {
		return fmt.Errorf("gpu: await of %v: not a mark of Beside", m)
	}
	return o.stream.WaitEvent(e)
}

// mark is the next event of the cycle.
func (o *Ops) mark() *cuda.Event {
	e := o.marks[o.next%len(o.marks)]
	o.next++
	return e
}

var kernels = []string{"moe_fill", "moe_axpby", "moe_copycols", "moe_gated", "moe_route",
	"moe_expert_count", "moe_expert_plan", "moe_expert_scatter", "moe_gather", "moe_combine", "moe_expert_gemv", "moe_route_softmax", "moe_gather_v8", "moe_gated_v8", "moe_combine_v8",
	"moe_expert_mma", "moe_expert_mma_m2", "moe_expert_mma_m2h", "moe_expert_mma_nohint"}

var _ moe.Ops = (*Ops)(nil)

// New compiles the kernels for dev's architecture (cached across runs) and binds cuBLAS to
// stream, which every operation uses.
func New(dev *cuda.Device, stream *cuda.Stream) (*Ops, error) {
	mma, ok := mmaKernels[os.Getenv("MOERUN_MMA_VARIANT")]
	if !ok {
		return nil, fmt.Errorf("gpu: MOERUN_MMA_VARIANT=%s: expected m2, m2h, nohint or nothing", os.Getenv("MOERUN_MMA_VARIANT"))
	}
	nv, err := cuda.LoadNVRTC()
	if err != nil {
		return nil, err
	}
	cc, err := dev.ComputeCapability()
	if err != nil {
		return nil, err
	}
	cubin, err := nv.Compile("moe_kernels.cu", kernelSource, cc)
	if err != nil {
		return nil, err
	}
	mod, err := dev.LoadModule(cubin)
	if err != nil {
		return nil, err
	}
	o := &Ops{dev: dev, stream: stream, mod: mod, fn: map[string]*cuda.Function{}, scratch: map[string]moe.Tensor{}, consts: map[string]deviceConst{}, cc: cc, mma: mma}
	for _, k := range kernels {
		if o.fn[k], err = mod.Function(k); err != nil {
			return nil, err
		}
	}
	if o.blas, err = cuda.NewBlas(stream); err != nil {
		return nil, err
	}
	if o.name, err = dev.Name(); err != nil {
		return nil, err
	}
	o.Libraries = fmt.Sprintf("NVRTC %d.%d from %s, cuBLAS %d from %s, kernels for sm_%d", nv.Major, nv.Minor, nv.Path(), o.blas.Version, o.blas.Path, cc)
	return o, nil
}

// Name is "cuda:N".
func (o *Ops) Name() string { return fmt.Sprintf("cuda:%d", o.dev.Ordinal) }

// Capturable reports whether Experts calls over these row counts (one per chunk) run
// without host synchronisation, so that forward passes made of them can be captured in a
// CUDA graph and replayed.
func (o *Ops) Capturable(rows []int, k, local int) bool {
	if expertMode == 2 || len(rows) == 0 {
		return false
	}
	for _, n := range rows {
		if planTiles(n, k, local).Exact {
			return false
		}
	}
	return true
}

// Capture records the work f enqueues on the stream (nothing runs) as a CUDA graph.
func (o *Ops) Capture(f func() error) (*cuda.Graph, error) { return o.stream.Capture(f) }

// Replay launches a captured graph on the stream.
func (o *Ops) Replay(g *cuda.Graph) error { return g.Launch(o.stream) }

// DeviceName is the GPU's product name ("NVIDIA H100 80GB HBM3").
func (o *Ops) DeviceName() string { return o.name }

// Sync waits for the stream.
func (o *Ops) Sync() error { return o.stream.Synchronize() }

// Alloc returns a zeroed rows×cols tensor in device memory.
func (o *Ops) Alloc(dt dtype.DType, rows, cols int) (moe.Tensor, error) {
	if !dt.Valid() || rows < 0 || cols < 0 {
		return moe.Tensor{}, fmt.Errorf("gpu: alloc %d×%d %v", rows, cols, dt)
	}
	n := rows * cols * dt.Size()
	p, err := o.dev.Alloc(n)
	if err != nil {
		return moe.Tensor{}, err
	}
	if err := o.stream.Memset(p, 0, n); err != nil {
		o.dev.Free(p)
		return moe.Tensor{}, err
	}
	return moe.Tensor{Buf: comm.DeviceBuffer(dt, p, rows*cols, o.dev.Ordinal), Rows: rows, Cols: cols}, nil
}

// Free releases a tensor's memory.
func (o *Ops) Free(t moe.Tensor) {
	if t.Buf.OnDevice() {
		o.dev.Free(t.Buf.Ptr())
	}
}

func kernelType(t dtype.DType) int {
	if t == dtype.BFloat16 {
		return 1
	}
	return 0
}

// threadsPerBlock is the block size of the element-wise kernels.
const threadsPerBlock = 256

// grid1D is the grid of a kernel with one thread per element (the kernels check i < n).
func grid1D(n int) (blocks [3]uint32, threads [3]uint32, err error) {
	b := (n + threadsPerBlock - 1) / threadsPerBlock
	if b > 1<<31-1 {
		return blocks, threads, fmt.Errorf("gpu: %d elements need %d blocks, more than a grid holds", n, b)
	}
	return [3]uint32{uint32(b), 1, 1}, [3]uint32{threadsPerBlock, 1, 1}, nil
}

// launch1D runs a kernel with one thread per element.
func (o *Ops) launch1D(name string, n int, args ...any) error {
	if n == 0 {
		return nil
	}
	blocks, threads, err := grid1D(n)
	if err != nil {
		return err
	}
	return o.fn[name].Launch(o.stream, blocks, threads, 0, args...)
}

// Fill sets every element from g (moe.Gen.At) on the device, rounded to t's dtype.
func (o *Ops) Fill(t moe.Tensor, g *moe.Gen) error {
	if t.DType() == dtype.Int32 {
		return fmt.Errorf("gpu: fill of an int32 tensor")
	}
	var experts uintptr
	if g.Experts != nil {
		ids := make([]int32, len(g.Experts))
		for i, e := range g.Experts {
			ids[i] = int32(e)
		}
		p, err := o.dev.Alloc(4 * len(ids))
		if err != nil {
			return err
		}
		defer o.dev.Free(p) // cuMemFree waits for the kernel that reads it
		if err := o.stream.CopyHtoD(p, unsafe.Slice((*byte)(unsafe.Pointer(&ids[0])), 4*len(ids))); err != nil {
			return err
		}
		experts = p
	}
	return o.launch1D("moe_fill", t.Rows*t.Cols, t.Buf.Ptr(), kernelType(t.DType()), t.Rows, t.Cols, g.Seed,
		uint32(g.A), uint32(g.B), g.BlockRows, g.SplitAt, experts, g.RowOffset, g.ColOffset, g.ValidRows, g.ValidCols, g.Scale)
}

// Upload copies host values into t, rounding to its dtype on the host.
func (o *Ops) Upload(t moe.Tensor, host []float32) error {
	if len(host) != t.Rows*t.Cols {
		return fmt.Errorf("gpu: upload of %d values into %v", len(host), t)
	}
	h := comm.NewHost(t.DType(), len(host))
	switch t.DType() {
	case dtype.Float32:
		copy(h.Float32s(), host)
	case dtype.BFloat16:
		for i, v := range host {
			h.BF16s()[i] = dtype.FromFloat32(v)
		}
	case dtype.Int32:
		for i, v := range host {
			h.Int32s()[i] = int32(v)
		}
	}
	if err := o.stream.CopyHtoD(t.Buf.Ptr(), h.Host()); err != nil {
		return err
	}
	return o.stream.Synchronize() // h is pageable Go memory: keep it alive until copied
}

// Download copies t into host values (waiting for the stream).
func (o *Ops) Download(t moe.Tensor, host []float32) error {
	if len(host) != t.Rows*t.Cols {
		return fmt.Errorf("gpu: download of %v into %d values", t, len(host))
	}
	h := comm.NewHost(t.DType(), len(host))
	if err := o.stream.CopyDtoH(h.Host(), t.Buf.Ptr()); err != nil {
		return err
	}
	if err := o.stream.Synchronize(); err != nil {
		return err
	}
	switch t.DType() {
	case dtype.Float32:
		copy(host, h.Float32s())
	case dtype.BFloat16:
		for i, v := range h.BF16s() {
			host[i] = v.Float32()
		}
	case dtype.Int32:
		for i, v := range h.Int32s() {
			host[i] = float32(v)
		}
	}
	return nil
}

// Copy copies src into dst (same shape and dtype).
func (o *Ops) Copy(dst, src moe.Tensor) error {
	if dst.Rows != src.Rows || dst.Cols != src.Cols || dst.DType() != src.DType() {
		return fmt.Errorf("gpu: copy of %v into %v", src, dst)
	}
	return o.stream.CopyDtoD(dst.Buf.Ptr(), src.Buf.Ptr(), dst.Buf.Bytes())
}

// Zero clears t.
func (o *Ops) Zero(t moe.Tensor) error { return o.stream.Memset(t.Buf.Ptr(), 0, t.Buf.Bytes()) }

// CopyCols copies the leading columns (§1.6 padding and truncation).
func (o *Ops) CopyCols(dst, src moe.Tensor) error {
	if dst.Rows != src.Rows || dst.DType() != src.DType() {
		return fmt.Errorf("gpu: copy columns of %v into %v", src, dst)
	}
	esz := dst.DType().Size()
	return o.launch1D("moe_copycols", dst.Rows*dst.Cols*esz, dst.Buf.Ptr(), src.Buf.Ptr(), dst.Rows, dst.Cols, src.Cols, esz)
}

// Linear sets out = x · wᵀ with float32 accumulation (cuBLAS).
func (o *Ops) Linear(x, w, out moe.Tensor) error {
	if x.Cols != w.Cols || out.Rows != x.Rows || out.Cols != w.Rows {
		return fmt.Errorf("gpu: linear %v · (%v)ᵀ into %v", x, w, out)
	}
	return o.blas.MatmulNT(x.Rows, w.Rows, x.Cols, 1, x.Buf.Ptr(), x.DType(), w.Buf.Ptr(), w.DType(), 0, out.Buf.Ptr(), out.DType())
}

// Logits is Linear into a float32 output.
func (o *Ops) Logits(x, w, out moe.Tensor) error {
	if out.DType() != dtype.Float32 {
		return fmt.Errorf("gpu: logits into %v: want float32", out)
	}
	return o.Linear(x, w, out)
}

// Axpby sets dst = a·dst + b·src.
func (o *Ops) Axpby(a float32, dst moe.Tensor, b float32, src moe.Tensor) error {
	if dst.Rows != src.Rows || dst.Cols != src.Cols || dst.DType() != src.DType() {
		return fmt.Errorf("gpu: axpby of %v into %v", src, dst)
	}
	n := dst.Rows * dst.Cols
	return o.launch1D("moe_axpby", n, dst.Buf.Ptr(), src.Buf.Ptr(), kernelType(dst.DType()), int64(n), a, b)
}

// MLP is the dense gated MLP: one GEMM into h [n, 2I], the gated activation, one GEMM
// out; h and the activation are in the layer's dtype, as on the CPU.
func (o *Ops) MLP(x moe.Tensor, w *moe.MLPWeights, act moe.Activation, out moe.Tensor) error {
	if x.Cols != w.H || out.Rows != x.Rows || out.Cols != w.H || w.W13.Rows != 2*w.I || w.W2.Rows != w.H || w.W2.Cols != w.I {
		return fmt.Errorf("gpu: mlp of %v with W13 %v and W2 %v into %v", x, w.W13, w.W2, out)
	}
	n := x.Rows
	if n == 0 {
		return nil
	}
	h, err := o.buffer("mlp.h", x.DType(), n, 2*w.I)
	if err != nil {
		return err
	}
	a, err := o.buffer("mlp.a", x.DType(), n, w.I)
	if err != nil {
		return err
	}
	if err := o.Linear(x, w.W13, h); err != nil {
		return err
	}
	if err := o.gated(h.Buf.Ptr(), a.Buf.Ptr(), x.DType(), n, w.I, act); err != nil {
		return err
	}
	return o.Linear(a, w.W2, out)
}

// vec8 picks the 16-byte element-wise kernels (moe_*_v8): bf16 rows of a multiple of 8
// values (every row then starts 16-byte aligned).
func vec8(dt dtype.DType, cols int) bool {
	return dt == dtype.BFloat16 && cols%8 == 0 && !disableVec
}

// disableVec keeps the scalar element-wise kernels (MOERUN_VEC=0: for comparisons).
var disableVec = os.Getenv("MOERUN_VEC") == "0"

// gated sets a [n, inter] = act(h[:, :inter]) ⊙ h[:, inter:] for h [n, 2·inter].
func (o *Ops) gated(h, a uintptr, dt dtype.DType, n, inter int, act moe.Activation) error {
	if vec8(dt, inter) {
		return o.launch1D("moe_gated_v8", n*inter/8, h, a, int64(n), inter/8, int(act))
	}
	return o.launch1D("moe_gated", n*inter, h, a, kernelType(dt), n, inter, int(act))
}

// Limits of the routing kernel (one thread per token, arrays in registers and local
// memory): DeepSeek-V3's 256 experts, top-8 and 8 groups fit with room to spare.
const (
	maxExperts = 512
	maxTopK    = 32
)

// Route runs moe/router's routing on the device: the same kind (FusedTopK, FusedTopKBias,
// GroupedTopK, with vLLM's fallbacks), scoring and tie rules, so the GPU picks the experts
// the CPU picks.
func (o *Ops) Route(cfg router.Config, logits, weights, ids moe.Tensor) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	k := cfg.TopK
	switch {
	case logits.DType() != dtype.Float32 || weights.DType() != dtype.Float32 || ids.DType() != dtype.Int32 ||
		logits.Cols != cfg.NumExperts || weights.Rows != logits.Rows || ids.Rows != logits.Rows || weights.Cols != k || ids.Cols != k:
		return fmt.Errorf("gpu: route %v into weights %v and ids %v (top-k %d)", logits, weights, ids, k)
	case cfg.NumExperts > maxExperts || k > maxTopK || cfg.NumExpertGroup > maxTopK:
		return fmt.Errorf("gpu: routing supports up to %d experts, top-k %d and %d groups, not %d, %d, %d",
			maxExperts, maxTopK, maxTopK, cfg.NumExperts, k, cfg.NumExpertGroup)
	}
	var bias uintptr
	if cfg.Bias != nil {
		b, err := o.constant("route.bias", dtype.Float32, cfg.Bias)
		if err != nil {
			return err
		}
		bias = b
	}
	grouped := 0
	if cfg.Kind() == router.GroupedTopK {
		grouped = 1
	}
	renorm := 0
	if cfg.Renormalize {
		renorm = 1
	}
	scale := float32(cfg.RoutedScalingFactor)
	if scale == 0 || !cfg.AppliesRoutedScale() {
		scale = 1
	}
	if cfg.Kind() == router.FusedTopK && cfg.EffectiveScoring() == router.Softmax && !disableFastRoute {
		// One warp per token (launch1D's blocks of 256 threads: 8 tokens each).
		return o.launch1D("moe_route_softmax", 32*logits.Rows, logits.Buf.Ptr(), weights.Buf.Ptr(), ids.Buf.Ptr(),
			logits.Rows, cfg.NumExperts, k, renorm, scale)
	}
	return o.launch1D("moe_route", logits.Rows, logits.Buf.Ptr(), weights.Buf.Ptr(), ids.Buf.Ptr(), logits.Rows, cfg.NumExperts, k,
		int(cfg.EffectiveScoring()), renorm, scale, bias, grouped, cfg.NumExpertGroup, cfg.TopKGroup)
}

// constant keeps a small array of type dt on the device under name (values given as exact
// float32s), uploading it again only when its values change: the router's bias and the
// expert map are the same on every call.
func (o *Ops) constant(name string, dt dtype.DType, v []float32) (uintptr, error) {
	if c, ok := o.consts[name]; ok && slicesEqual(c.host, v) {
		return c.dev.Buf.Ptr(), nil
	}
	t, err := o.buffer(name, dt, 1, len(v))
	if err != nil {
		return 0, err
	}
	if err := o.Upload(t, v); err != nil {
		return 0, err
	}
	o.consts[name] = deviceConst{host: append([]float32(nil), v...), dev: t}
	return t.Buf.Ptr(), nil
}

type deviceConst struct {
	host []float32
	dev  moe.Tensor
}

func slicesEqual(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// buffer is a scratch tensor of at least rows×cols elements, reused across calls.
func (o *Ops) buffer(name string, dt dtype.DType, rows, cols int) (moe.Tensor, error) {
	t, ok := o.scratch[name]
	if !ok || t.DType() != dt || t.Buf.Len() < rows*cols {
		if ok {
			o.Free(t)
		}
		var err error
		if t, err = o.Alloc(dt, rows, cols); err != nil {
			return moe.Tensor{}, err
		}
		o.scratch[name] = t
	}
	return moe.Tensor{Buf: t.Buf.Slice(0, rows*cols), Rows: rows, Cols: cols}, nil
}

// Close frees the scratch tensors, the cuBLAS handle and the kernels.
func (o *Ops) Close() error {
	for _, t := range o.scratch {
		o.Free(t)
	}
	o.scratch = map[string]moe.Tensor{}
	err := o.blas.Destroy()
	for _, e := range o.marks {
		err = errors.Join(err, e.Destroy())
	}
	if o.side != nil {
		err = errors.Join(err, o.side.Destroy())
	}
	o.marks, o.side = nil, nil
	if uerr := o.mod.Unload(); err == nil {
		err = uerr
	}
	return err
}

// tilePlan sizes the expert GEMMs of one Experts call from what the host knows before
// routing (rows n, top-k k, local experts): every expert's rows are cut into tiles of R
// rows, and the batched GEMMs run over at most MaxTiles tiles, a bound that holds for every
// routing, so that the host never needs the per-expert counts (see moe_expert_plan).
type tilePlan struct {
	R, MaxTiles int
	// Exact: read back the number of tiles in use and the per-expert counts (one
	// device-to-host copy, the one synchronisation of a forward pass, forced because cuBLAS
	// takes batch counts and row counts from the host) and run only those tiles, or one
	// GEMM per expert of exactly its rows when the experts are few. Chosen when the spare tiles of MaxTiles could cost
	// compute that matters: past the decode regime, where GEMMs stop being bound by reading
	// the weights.
	Exact bool
}

const (
	// minTileRows and maxTileRows bound R: small tiles keep decode padding low, 256-row
	// tiles run the batched GEMM near its peak in prefill (../shared/docs/GROUPED-GEMM.md,
	// table B: 588 TFLOP/s at 256 rows per entry).
	minTileRows = 8
	maxTileRows = 256
	// maxExactTileRows bounds R once counts are read back (prefill sizes).
	maxExactTileRows = 128
	// decodeRowsPerExpert: while the padded GEMM rows stay under this many per local
	// expert, the GEMMs are bound by streaming the weights and padding is nearly free.
	decodeRowsPerExpert = 128
	// maxPlanExperts is the plan kernel's block size (MOE_PLAN_THREADS).
	maxPlanExperts = 1024
)

func planTiles(n, k, local int) tilePlan {
	slots := n * k
	touched := min(local, slots)
	if touched == 0 {
		return tilePlan{R: 1}
	}
	avg := (slots + touched - 1) / touched
	r := minTileRows
	for r < 2*avg && r < maxTileRows {
		r *= 2
	}
	// One token sends an expert at most one row; R stays a multiple of 8 so that every
	// tile of bf16 rows starts 16-byte aligned, as cuBLAS's fast kernels want (it cannot
	// see the addresses in device pointer arrays).
	r = min(r, (n+7)/8*8)
	maxTiles := min(slots, (slots+touched*(r-1))/r)
	if maxTiles*r <= decodeRowsPerExpert*local {
		return tilePlan{R: r, MaxTiles: maxTiles}
	}
	// Past decode, padding is tensor-core time: tiles about the mean rows per expert, a
	// power of two in [64, 128] (measured on 2 × H200, docs/PERFORMANCE.md: 128-row tiles
	// beat 64 and 256 for deepseek-v3 and qwen3 at 1024 and 4096 tokens per rank;
	// MOERUN_TILE_ROWS overrides it for experiments), so an expert wastes at most one
	// partly filled tile.
	r = 64
	for r*2 <= avg && r < maxExactTileRows {
		r *= 2
	}
	if tileRowsOverride > 0 {
		r = tileRowsOverride
	}
	r = min(r, (n+7)/8*8)
	return tilePlan{R: r, MaxTiles: min(slots, (slots+touched*(r-1))/r), Exact: true}
}

// tileRowsOverride is MOERUN_TILE_ROWS (a multiple of 8), the tile rows of exact plans for
// experiments; 0 when unset or invalid.
var tileRowsOverride = func() int {
	v, err := strconv.Atoi(os.Getenv("MOERUN_TILE_ROWS"))
	if err != nil || v < 8 || v%8 != 0 {
		return 0
	}
	return v
}()

// loopMaxExperts: with counts on the host (exact plans) and this few local experts, one
// cuBLAS GEMM per expert over exactly its rows beats padded tiles (GROUPED-GEMM.md, table
// B: 709 against 683 TFLOP/s for mixtral shapes, and no padding).
const loopMaxExperts = 16

// perExpert runs, for each local expert with rows, out = in · wᵀ over exactly its rows:
// the rows of expert e start at its first tile (tiles are laid out expert-major, R rows
// each), in and out are [rows, k] and [rows, n] tensors in that layout, w holds the
// experts' [n, k] blocks one after another.
func (o *Ops) perExpert(counts []float32, r int, in, w, out moe.Tensor) error {
	first := 0
	for e, c := range counts {
		rows := int(c)
		if rows == 0 {
			continue
		}
		at := first * r
		if err := o.Linear(in.RowSlice(at, rows), w.RowSlice(e*out.Cols, out.Cols), out.RowSlice(at, rows)); err != nil {
			return err
		}
		first += (rows + r - 1) / r
	}
	return nil
}

// The decode GEMM kernel's shape (moe_expert_gemv: GEMV_WARPS warps of GEMV_ROWS weight
// rows, tiles of GEMV_TILE_ROWS rows).
const (
	gemvTileRows     = 8
	gemvThreads      = 8 * 32
	gemvRowsPerBlock = 8 * 4
	gemvMaxGridY     = 65535
)

// The tensor-core grouped GEMM's block: MMA_WARPS warps.
const mmaThreads = 4 * 32

// mmaKernel is one variant of the tensor-core kernel: MT·16 weight rows per warp (4 warps
// a block), chunks of P·32 columns (K must be a multiple), with or without the L2 hint.
type mmaKernel struct {
	fn                      string
	rowsPerBlock, kMultiple int
}

// mmaKernels by MOERUN_MMA_VARIANT (for comparisons; docs/DECISIONS.md has the numbers).
var mmaKernels = map[string]mmaKernel{
	"":       {"moe_expert_mma", 4 * 1 * 16, 128},        // MT 1, P 4, L2::256B
	"m2":     {"moe_expert_mma_m2", 4 * 2 * 16, 64},      // MT 2, P 2
	"m2h":    {"moe_expert_mma_m2h", 4 * 2 * 16, 64},     // MT 2, P 2, L2::256B
	"nohint": {"moe_expert_mma_nohint", 4 * 1 * 16, 128}, // MT 1, P 4
}

// mmaMaxRows: up to this many rows per expert the tensor-core kernel beats cuBLAS (one
// H100, mixtral at 16 and 32 rows per expert: 0.98 and 1.12 ms against 1.11 and 1.24;
// at 64 rows cuBLAS wins, 1.26 against 1.48 ms): exact plans with a larger expert go to
// cuBLAS. Past 32 rows an expert takes the kernel's 64-row pass, which loses to cuBLAS.
const mmaMaxRows = 32

// mmaMaxMeanRows: decode plans (counts on the device) take the tensor-core kernel while
// the mean rows per expert of the whole model, rows·top-k / experts, are at most this,
// and mmaFewMaxMeanRows when fewer than mmaManyExperts experts are local: a few large
// experts make a small grid (N/64 blocks each) of long K loops, which hides latency
// worse as the passes widen. On 2 × H200, EP 2, ms against cuBLAS: qwen3-30b-a3b 128
// tokens per rank (mean 16, 64 local) 0.274 / 0.308; deepseek-v3 256 (mean 16, 128
// local) 3.57 / 4.11; mixtral (4 local) 16 tokens (mean 8) 0.400 / 0.490, 32 tokens
// (mean 16) 0.516 / 0.491, 64 tokens (mean 32) 0.72 / 0.50 (docs/PERFORMANCE.md).
const (
	mmaMaxMeanRows    = 16
	mmaFewMaxMeanRows = 8
	mmaManyExperts    = 16
)

// expertGEMM names the kernel that runs the expert GEMMs of one Experts call.
type expertGEMM int

const (
	gemmCUBLAS expertGEMM = iota // one batched cuBLAS GEMM over the tiles (or one per expert)
	gemmGEMV                     // moe_expert_gemv: 8-row tiles on CUDA cores
	gemmMMA                      // moe_expert_mma: each expert's rows at once on tensor cores
)

// chooseGEMM picks the expert GEMM for a plan, element type and the GEMMs' shapes (n×k
// weights per expert: gate+up then down), meanRows the rows an expert of the model gets
// on average (rows·top-k / all experts, local or not), local the experts held here,
// hostCounts the per-expert rows when the plan read them back. Decode plans (counts on
// the device only) take the tensor-core kernel, which reads each touched expert's weights
// once whatever its rows, while meanRows is at most mmaMaxMeanRows (mmaFewMaxMeanRows
// with few local experts); exact plans take it while no expert has more than mmaMaxRows
// rows (past that, tensor-core arithmetic, which cuBLAS does better, is the cost).
// MOERUN_EXPERT_GEMM=cublas|gemv|mma forces one where it applies (for comparisons);
// MOERUN_GEMV=0 is the older spelling of cublas.
func (o *Ops) chooseGEMM(p tilePlan, dt dtype.DType, shapes [2][2]int, meanRows, local int, hostCounts []float32) expertGEMM {
	mmaOK, gemvOK := o.cc >= 80 && dt == dtype.BFloat16, useGEMV(p, dt, shapes[0][0], shapes[0][1])
	for _, s := range shapes {
		mmaOK = mmaOK && s[0]%16 == 0 && s[1]%o.mma.kMultiple == 0 && s[0] > 0
		gemvOK = gemvOK && useGEMV(p, dt, s[0], s[1])
	}
	switch forceGEMM {
	case "cublas":
		return gemmCUBLAS
	case "gemv":
		if gemvOK {
			return gemmGEMV
		}
		return gemmCUBLAS
	case "mma":
		if mmaOK {
			return gemmMMA
		}
		return gemmCUBLAS
	}
	if !mmaOK {
		if gemvOK {
			return gemmGEMV
		}
		return gemmCUBLAS
	}
	if hostCounts == nil {
		if meanRows > mmaMaxMeanRows || local < mmaManyExperts && meanRows > mmaFewMaxMeanRows {
			return gemmCUBLAS
		}
		return gemmMMA
	}
	for _, c := range hostCounts {
		if int(c) > mmaMaxRows {
			return gemmCUBLAS
		}
	}
	return gemmMMA
}

// bucket is one batched GEMM of an exact plan: experts of the same padded rows, one
// pointer-array entry each (ptrs: its first entry in the first of 6 arrays, stride apart).
type bucket struct {
	rows, experts, first int
	ptrs, stride         uintptr
}

// bucketExperts groups the experts with rows by their padded rows (a multiple of R: their
// tiles, laid out expert-major) so that each group is one batched GEMM of that many rows:
// a whole expert per batch entry, where tiles of R rows would make cuBLAS read the
// expert's weights once per tile and run small GEMMs (GROUPED-GEMM.md, table B: one call
// per distinct padded size reaches 557–588 TFLOP/s). It returns the buckets by rows and
// the 6 pointer arrays (gate+up weights, inputs, outputs; down weights, inputs, outputs),
// each with one 8-byte address per expert in bucket order: bases[i] plus per[i] times the
// expert's index (weights) or its first row (the others).
func bucketExperts(counts []float32, r int, bases, per [6]uint64) ([]bucket, []byte) {
	type expert struct{ e, tiles, firstRow int }
	var es []expert
	first := 0
	for e, c := range counts {
		tiles := (int(c) + r - 1) / r
		if tiles > 0 {
			es = append(es, expert{e, tiles, first * r})
		}
		first += tiles
	}
	sort.SliceStable(es, func(i, j int) bool { return es[i].tiles < es[j].tiles })
	arrays := make([]byte, 6*8*len(es))
	var buckets []bucket
	for i, x := range es {
		if len(buckets) == 0 || buckets[len(buckets)-1].rows != x.tiles*r {
			buckets = append(buckets, bucket{rows: x.tiles * r, first: i})
		}
		buckets[len(buckets)-1].experts++
		for a := range 6 {
			unit := uint64(x.firstRow)
			if a == 0 || a == 3 {
				unit = uint64(x.e)
			}
			binary.LittleEndian.PutUint64(arrays[(a*len(es)+i)*8:], bases[a]+unit*per[a])
		}
	}
	return buckets, arrays
}

// disableBuckets runs exact plans as one batched GEMM over R-row tiles
// (MOERUN_BUCKETS=0: for comparisons).
var disableBuckets = os.Getenv("MOERUN_BUCKETS") == "0"

// forceGEMM is MOERUN_EXPERT_GEMM ("" chooses by size).
var forceGEMM = func() string {
	if os.Getenv("MOERUN_GEMV") == "0" {
		return "cublas"
	}
	return os.Getenv("MOERUN_EXPERT_GEMM")
}()

// useGEMV says whether the GEMV kernel can run a plan: tiles of 8 bf16 rows, K a multiple
// of 8 (16-byte loads).
func useGEMV(p tilePlan, dt dtype.DType, n, k int) bool {
	return p.R == gemvTileRows && dt == dtype.BFloat16 && k%8 == 0 && k > 0 &&
		(n+gemvRowsPerBlock-1)/gemvRowsPerBlock <= gemvMaxGridY
}

// disableFastRoute routes every kind with moe_route, one thread per token
// (MOERUN_FAST_ROUTE=0: for comparisons).
var disableFastRoute = os.Getenv("MOERUN_FAST_ROUTE") == "0"

// expertMode forces the expert GEMM plan in tests: 0 chooses by size, 1 never reads the
// tile count back (decode), 2 always does (exact).
var expertMode = 0

// Experts runs the local experts over the routed rows: count the slots per local expert,
// plan the tiles and write the GEMMs' pointer arrays on the device, gather the rows tile by
// tile, the gate+up GEMM, the gated activation, the down GEMM, and the weighted sum over
// top-k in float32. The GEMMs are the GEMV kernel for 8-row tiles, one cuBLAS GEMM per
// expert when the plan is exact and the experts few, else one batched cuBLAS GEMM over the
// tiles. No host synchronisation unless the plan is exact (prefill sizes).
func (o *Ops) Experts(x, weights, ids moe.Tensor, w *moe.ExpertWeights, expertMap []int32, act moe.Activation, onInput bool, out moe.Tensor) error {
	n, k, hd, inter := x.Rows, weights.Cols, w.H, w.I
	switch {
	case x.Cols != hd || out.Rows != n || out.Cols != hd || x.DType() != out.DType():
		return fmt.Errorf("gpu: experts on %v into %v with hidden %d", x, out, hd)
	case weights.Rows != n || ids.Rows != n || ids.Cols != k || weights.DType() != dtype.Float32 || ids.DType() != dtype.Int32:
		return fmt.Errorf("gpu: experts with weights %v and ids %v for %d rows", weights, ids, n)
	case w.W13.Rows != w.Local*2*inter || w.W13.Cols != hd || w.W2.Rows != w.Local*hd || w.W2.Cols != inter:
		return fmt.Errorf("gpu: expert weights W13 %v, W2 %v for %d experts of %d×%d", w.W13, w.W2, w.Local, inter, hd)
	case w.W13.DType() != x.DType() || w.W2.DType() != x.DType():
		return fmt.Errorf("gpu: expert weights are %v and %v, activations %v", w.W13.DType(), w.W2.DType(), x.DType())
	case onInput && k != 1:
		return fmt.Errorf("gpu: router weight on the input needs top-k 1, not %d", k)
	case w.Local > maxPlanExperts:
		return fmt.Errorf("gpu: %d local experts, the expert plan holds at most %d", w.Local, maxPlanExperts)
	}
	if n == 0 {
		return nil
	}
	slots := n * k
	dt := x.DType()
	plan := planTiles(n, k, w.Local)
	switch expertMode {
	case 1:
		plan.Exact = false
	case 2:
		plan.Exact = true
	}
	if w.Local == 0 || plan.MaxTiles == 0 {
		return o.Zero(out)
	}
	var emap uintptr
	if expertMap != nil {
		m := make([]float32, len(expertMap))
		for i, v := range expertMap {
			m[i] = float32(v)
		}
		p, err := o.constant("experts.map", dtype.Int32, m)
		if err != nil {
			return err
		}
		emap = p
	}
	rows := plan.MaxTiles * plan.R
	bufs := []struct {
		name       string
		dt         dtype.DType
		rows, cols int
	}{
		{"experts.meta", dtype.Int32, 1, w.Local + 1}, // per-expert counts, then the tiles in use
		{"experts.cursor", dtype.Int32, 1, w.Local},
		{"experts.ptrs", dtype.Int32, 6 * plan.MaxTiles, 2}, // 6 arrays of 64-bit addresses
		{"experts.tilerows", dtype.Int32, 1, plan.MaxTiles},
		{"experts.perm", dtype.Int32, 1, rows},
		{"experts.pos", dtype.Int32, 1, slots},
		{"experts.x", dt, rows, hd},
		{"experts.h", dt, rows + plan.R, 2 * inter}, // + the spare output tile
		{"experts.a", dt, rows, inter},
		{"experts.y", dt, rows + plan.R, hd},
	}
	t := make([]moe.Tensor, len(bufs))
	for i, b := range bufs {
		var err error
		if t[i], err = o.buffer(b.name, b.dt, b.rows, b.cols); err != nil {
			return err
		}
	}
	meta, cursor, ptrs, tileRows, perm, pos, xg, h, a, y := t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7], t[8], t[9]
	counts := moe.Tensor{Buf: meta.Buf.Slice(0, w.Local), Rows: 1, Cols: w.Local}
	used := moe.Tensor{Buf: meta.Buf.Slice(w.Local, 1), Rows: 1, Cols: 1}
	esz := uint64(dt.Size())
	r := uint64(plan.R)
	if err := o.Zero(counts); err != nil {
		return err
	}
	if err := o.stream.Memset(perm.Buf.Ptr(), 0xff, perm.Buf.Bytes()); err != nil { // -1: padding
		return err
	}
	if err := o.launch1D("moe_expert_count", slots, ids.Buf.Ptr(), emap, slots, counts.Buf.Ptr()); err != nil {
		return err
	}
	if err := o.fn["moe_expert_plan"].Launch(o.stream, [3]uint32{1, 1, 1}, [3]uint32{maxPlanExperts, 1, 1}, 0,
		counts.Buf.Ptr(), w.Local, plan.R, plan.MaxTiles, cursor.Buf.Ptr(), ptrs.Buf.Ptr(), used.Buf.Ptr(),
		uint64(w.W13.Buf.Ptr()), uint64(2*inter*hd)*esz, uint64(w.W2.Buf.Ptr()), uint64(hd*inter)*esz,
		uint64(xg.Buf.Ptr()), r*uint64(hd)*esz, uint64(h.Buf.Ptr()), r*uint64(2*inter)*esz,
		uint64(a.Buf.Ptr()), r*uint64(inter)*esz, uint64(y.Buf.Ptr()), r*uint64(hd)*esz,
		uint64(h.Buf.Ptr())+uint64(rows)*uint64(2*inter)*esz, uint64(y.Buf.Ptr())+uint64(rows)*uint64(hd)*esz, tileRows.Buf.Ptr()); err != nil {
		return err
	}
	if err := o.launch1D("moe_expert_scatter", slots, ids.Buf.Ptr(), emap, slots, cursor.Buf.Ptr(), perm.Buf.Ptr(), pos.Buf.Ptr()); err != nil {
		return err
	}
	tiles := plan.MaxTiles
	var hostCounts []float32
	if plan.Exact {
		hm := make([]float32, w.Local+1)
		if err := o.Download(meta, hm); err != nil {
			return err
		}
		hostCounts, tiles = hm[:w.Local], int(hm[w.Local])
	}
	if tiles == 0 {
		return o.Zero(out)
	}
	live := tiles * plan.R
	on := 0
	if onInput {
		on = 1
	}
	gather := func() error {
		if vec8(dt, hd) {
			return o.launch1D("moe_gather_v8", live*hd/8, x.Buf.Ptr(), perm.Buf.Ptr(), weights.Buf.Ptr(), on, k, hd/8, int64(live), xg.Buf.Ptr())
		}
		return o.launch1D("moe_gather", live*hd, x.Buf.Ptr(), perm.Buf.Ptr(), weights.Buf.Ptr(), on, k, hd, int64(live), kernelType(dt), xg.Buf.Ptr())
	}
	if err := gather(); err != nil {
		return err
	}
	arr := func(i int) uintptr { return ptrs.Buf.Ptr() + uintptr(i*plan.MaxTiles*8) }
	experts := w.Local // all of the model's experts: the expert map's length under EP
	if expertMap != nil {
		experts = len(expertMap)
	}
	kind := o.chooseGEMM(plan, dt, [2][2]int{{2 * inter, hd}, {hd, inter}}, (slots+experts-1)/experts, w.Local, hostCounts)
	var buckets []bucket
	if kind == gemmCUBLAS && hostCounts != nil && w.Local > loopMaxExperts && !disableBuckets {
		bases := [6]uint64{uint64(w.W13.Buf.Ptr()), uint64(xg.Buf.Ptr()), uint64(h.Buf.Ptr()), uint64(w.W2.Buf.Ptr()), uint64(a.Buf.Ptr()), uint64(y.Buf.Ptr())}
		per := [6]uint64{uint64(2*inter*hd) * esz, uint64(hd) * esz, uint64(2*inter) * esz, uint64(hd*inter) * esz, uint64(inter) * esz, uint64(hd) * esz}
		var arrays []byte
		buckets, arrays = bucketExperts(hostCounts, plan.R, bases, per)
		bp, err := o.buffer("experts.bucketptrs", dtype.Int32, 1, len(arrays)/4)
		if err != nil {
			return err
		}
		if err := o.stream.CopyHtoD(bp.Buf.Ptr(), arrays); err != nil {
			return err
		}
		// arrays is Go memory the copy reads from: wait until it is read (exact plans have
		// synchronised once already; this is the second and last wait of the pass).
		if err := o.stream.Synchronize(); err != nil {
			return err
		}
		for i := range buckets {
			buckets[i].ptrs = bp.Buf.Ptr() + uintptr(buckets[i].first*8)
			buckets[i].stride = uintptr(len(arrays) / 6)
		}
	}
	// gemm runs out = in · Wᵀ for every tile (weights w: the experts' blocks; arrays i0:
	// the pointer arrays of weights, inputs, outputs).
	gemm := func(in, wt, outT moe.Tensor, i0 int) error {
		n, k := outT.Cols, in.Cols
		switch {
		case kind == gemmMMA:
			grid := [3]uint32{uint32((n + o.mma.rowsPerBlock - 1) / o.mma.rowsPerBlock), uint32(w.Local), 1}
			return o.fn[o.mma.fn].Launch(o.stream, grid, [3]uint32{mmaThreads, 1, 1}, 0,
				wt.Buf.Ptr(), int64(n*k), in.Buf.Ptr(), outT.Buf.Ptr(), counts.Buf.Ptr(), cursor.Buf.Ptr(), n, k)
		case hostCounts != nil && w.Local <= loopMaxExperts:
			return o.perExpert(hostCounts, plan.R, in, wt, outT)
		case buckets != nil:
			for _, b := range buckets {
				at := func(i int) uintptr { return b.ptrs + uintptr(i)*b.stride }
				if err := o.blas.BatchedMatmulNT(b.rows, n, k, 1, at(i0+1), dt, at(i0), dt, 0, at(i0+2), dt, b.experts); err != nil {
					return err
				}
			}
			return nil
		case kind == gemmGEMV:
			grid := [3]uint32{uint32(tiles), uint32((n + gemvRowsPerBlock - 1) / gemvRowsPerBlock), 1}
			return o.fn["moe_expert_gemv"].Launch(o.stream, grid, [3]uint32{gemvThreads, 1, 1}, 0,
				arr(i0), arr(i0+1), arr(i0+2), used.Buf.Ptr(), tileRows.Buf.Ptr(), n, k)
		}
		return o.blas.BatchedMatmulNT(plan.R, n, k, 1, arr(i0+1), dt, arr(i0), dt, 0, arr(i0+2), dt, tiles)
	}
	if err := gemm(xg, w.W13, h, 0); err != nil {
		return err
	}
	if err := o.gated(h.Buf.Ptr(), a.Buf.Ptr(), dt, live, inter, act); err != nil {
		return err
	}
	if err := gemm(a, w.W2, y, 3); err != nil {
		return err
	}
	if vec8(dt, hd) {
		return o.launch1D("moe_combine_v8", n*hd/8, y.Buf.Ptr(), pos.Buf.Ptr(), weights.Buf.Ptr(), on, int64(n), k, hd/8, out.Buf.Ptr())
	}
	return o.launch1D("moe_combine", n*hd, y.Buf.Ptr(), pos.Buf.Ptr(), weights.Buf.Ptr(), on, n, k, hd, kernelType(dt), out.Buf.Ptr())
}
