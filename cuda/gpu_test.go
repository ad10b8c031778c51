package cuda

import (
	"bytes"
	"math"
	"runtime"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/moerun/moerun/dtype"
)

// gpu loads the real driver and device 0, or skips: these tests run on the GPU host from
// a test binary built here (go test -c).
func gpu(t *testing.T) *Device {
	t.Helper()
	runtime.LockOSThread()
	t.Cleanup(runtime.UnlockOSThread)
	d, err := Load()
	if err != nil {
		t.Skipf("no CUDA driver here: %v", err)
	}
	if n, err := d.DeviceCount(); err != nil || n == 0 {
		t.Skipf("no GPU here (%d, %v)", n, err)
	}
	g, err := d.Device(0)
	if err != nil {
		t.Fatal(err)
	}
	if err := g.MakeCurrent(); err != nil {
		t.Fatal(err)
	}
	return g
}

func TestDeviceMemoryRoundTrip(t *testing.T) {
	g := gpu(t)
	name, _ := g.Name()
	cc, _ := g.ComputeCapability()
	sms, _ := g.Multiprocessors()
	free, total, _ := g.MemInfo()
	t.Logf("device 0: %s, sm_%d, %d SMs, %.1f of %.1f GiB free", name, cc, sms, float64(free)/(1<<30), float64(total)/(1<<30))
	if cc < 70 || sms < 1 || total == 0 {
		t.Errorf("implausible device: cc %d, %d SMs, %d bytes", cc, sms, total)
	}
	s, err := g.NewStream()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Destroy()
	const n = 1 << 20
	a, err := g.Alloc(n)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Free(a)
	b, _ := g.Alloc(n)
	defer g.Free(b)
	src := make([]byte, n)
	for i := range src {
		src[i] = byte(i * 7)
	}
	start, _ := g.NewEvent()
	end, _ := g.NewEvent()
	start.Record(s)
	if err := s.CopyHtoD(a, src); err != nil {
		t.Fatal(err)
	}
	if err := s.CopyDtoD(b, a, n); err != nil {
		t.Fatal(err)
	}
	if err := s.Memset(a, 0, n/2); err != nil {
		t.Fatal(err)
	}
	end.Record(s)
	got := make([]byte, n)
	if err := s.CopyDtoH(got, b); err != nil {
		t.Fatal(err)
	}
	half := make([]byte, n)
	s.CopyDtoH(half, a)
	if err := s.Synchronize(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, src) || !bytes.Equal(half[:n/2], make([]byte, n/2)) || !bytes.Equal(half[n/2:], src[n/2:]) {
		t.Error("device copies lost data")
	}
	ms, err := end.Since(start)
	if err != nil || ms <= 0 {
		t.Errorf("event timing: %v ms, %v", ms, err)
	}
	if done, err := s.Done(); !done || err != nil {
		t.Errorf("stream done %v, %v", done, err)
	}
}

const saxpySrc = `
extern "C" __global__ void saxpy(float a, const float *x, float *y, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = a * x[i] + y[i];
}`

func f32bytes(v []float32) []byte { return unsafe.Slice((*byte)(unsafe.Pointer(&v[0])), 4*len(v)) }

// NVRTC compiles for the device's own architecture, the module loads, the kernel runs;
// the second compile comes from the cache.
func TestNVRTCKernel(t *testing.T) {
	g := gpu(t)
	nv, err := LoadNVRTC()
	if err != nil {
		t.Fatalf("NVRTC: %v", err)
	}
	cc, _ := g.ComputeCapability()
	start := time.Now()
	cubin, err := nv.Compile("saxpy.cu", saxpySrc, cc)
	if err != nil {
		t.Fatal(err)
	}
	first := time.Since(start)
	start = time.Now()
	again, err := nv.Compile("saxpy.cu", saxpySrc, cc)
	if err != nil || len(again) != len(cubin) {
		t.Fatalf("cached compile: %v", err)
	}
	t.Logf("NVRTC %d.%d from %s: sm_%d cubin of %d bytes in %v, cached %v", nv.Major, nv.Minor, nv.Path(), cc, len(cubin), first, time.Since(start))
	if _, err := nv.Compile("bad.cu", "this is not CUDA", cc); err == nil || !strings.Contains(err.Error(), "nvrtcCompileProgram of bad.cu") {
		t.Errorf("bad source: %v", err)
	}
	m, err := g.LoadModule(cubin)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Unload()
	f, err := m.Function("saxpy")
	if err != nil {
		t.Fatal(err)
	}
	const n = 1000
	s, dx, dy, y := saxpyData(t, g, n)
	if err := f.Launch(s, [3]uint32{(n + 255) / 256, 1, 1}, [3]uint32{256, 1, 1}, 0, float32(2), dx, dy, n); err != nil {
		t.Fatal(err)
	}
	s.CopyDtoH(f32bytes(y), dy)
	if err := s.Synchronize(); err != nil {
		t.Fatal(err)
	}
	for i, v := range y {
		if v != 2*float32(i)+1 {
			t.Fatalf("y[%d] = %v, want %v", i, v, 2*float32(i)+1)
		}
	}
}

// cuBLAS: the row-major c = a·wᵀ of MatmulNT in float32 and bf16, and the batched form
// with device pointer arrays, against float64 loops.
func TestBlasMatmulNT(t *testing.T) {
	g := gpu(t)
	s, _ := g.NewStream()
	defer s.Destroy()
	b, err := NewBlas(s)
	if err != nil {
		t.Fatalf("cuBLAS: %v", err)
	}
	defer b.Destroy()
	t.Logf("cuBLAS %d from %s", b.Version, b.Path)
	const n, m, k = 37, 53, 64
	a, w := make([]float32, n*k), make([]float32, m*k)
	for i := range a {
		a[i] = dtype.FromFloat32(float32(i%13-6) / 8).Float32()
	}
	for i := range w {
		w[i] = dtype.FromFloat32(float32(i%7-3) / 4).Float32()
	}
	want := make([]float64, n*m)
	for r := 0; r < n; r++ {
		for c := 0; c < m; c++ {
			for q := 0; q < k; q++ {
				want[r*m+c] += float64(a[r*k+q]) * float64(w[c*k+q])
			}
		}
	}
	da, _ := g.Alloc(4 * n * k)
	dw, _ := g.Alloc(4 * m * k)
	dc, _ := g.Alloc(4 * n * m)
	defer g.Free(da)
	defer g.Free(dw)
	defer g.Free(dc)
	s.CopyHtoD(da, f32bytes(a))
	s.CopyHtoD(dw, f32bytes(w))
	if err := b.MatmulNT(n, m, k, 1, da, dtype.Float32, dw, dtype.Float32, 0, dc, dtype.Float32); err != nil {
		t.Fatal(err)
	}
	got := make([]float32, n*m)
	s.CopyDtoH(f32bytes(got), dc)
	if err := s.Synchronize(); err != nil {
		t.Fatal(err)
	}
	for i := range got {
		if math.Abs(float64(got[i])-want[i]) > 1e-3 {
			t.Fatalf("float32 c[%d] = %v, want %v", i, got[i], want[i])
		}
	}
	// bf16 inputs (exact here), bf16 output: within a bf16 rounding.
	ab, wb := make([]uint16, n*k), make([]uint16, m*k)
	for i, v := range a {
		ab[i] = uint16(dtype.FromFloat32(v))
	}
	for i, v := range w {
		wb[i] = uint16(dtype.FromFloat32(v))
	}
	s.CopyHtoD(da, unsafe.Slice((*byte)(unsafe.Pointer(&ab[0])), 2*len(ab)))
	s.CopyHtoD(dw, unsafe.Slice((*byte)(unsafe.Pointer(&wb[0])), 2*len(wb)))
	// Batched: two identical problems through device pointer arrays.
	ptrs := []uint64{uint64(da), uint64(da), uint64(dw), uint64(dw), uint64(dc), uint64(dc) + 2*n*m}
	dp, _ := g.Alloc(8 * len(ptrs))
	defer g.Free(dp)
	s.CopyHtoD(dp, unsafe.Slice((*byte)(unsafe.Pointer(&ptrs[0])), 8*len(ptrs)))
	if err := b.BatchedMatmulNT(n, m, k, 1, dp, dtype.BFloat16, dp+16, dtype.BFloat16, 0, dp+32, dtype.BFloat16, 2); err != nil {
		t.Fatal(err)
	}
	cb := make([]uint16, 2*n*m)
	s.CopyDtoH(unsafe.Slice((*byte)(unsafe.Pointer(&cb[0])), 4*n*m), dc)
	if err := s.Synchronize(); err != nil {
		t.Fatal(err)
	}
	for i, v := range cb {
		w := want[i%(n*m)]
		if got := float64(dtype.BF16(v).Float32()); math.Abs(got-w) > 1e-2*math.Max(1, math.Abs(w)) {
			t.Fatalf("bf16 batched c[%d] = %v, want %v", i, got, w)
		}
	}
}

// A captured kernel launch replays: three launches of a graph of y = 2x + y add 6x.
func TestGraphReplay(t *testing.T) {
	g := gpu(t)
	if !g.d.Graphs() {
		t.Skip("this driver has no CUDA graph functions")
	}
	nv, err := LoadNVRTC()
	if err != nil {
		t.Fatal(err)
	}
	cc, _ := g.ComputeCapability()
	cubin, err := nv.Compile("saxpy.cu", saxpySrc, cc)
	if err != nil {
		t.Fatal(err)
	}
	m, err := g.LoadModule(cubin)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Unload()
	f, _ := m.Function("saxpy")
	const n = 513
	s, dx, dy, y := saxpyData(t, g, n)
	s.Synchronize()
	graph, err := s.Capture(func() error {
		return f.Launch(s, [3]uint32{(n + 255) / 256, 1, 1}, [3]uint32{256, 1, 1}, 0, float32(2), dx, dy, n)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer graph.Destroy()
	for range 3 {
		if err := graph.Launch(s); err != nil {
			t.Fatal(err)
		}
	}
	s.CopyDtoH(f32bytes(y), dy)
	if err := s.Synchronize(); err != nil {
		t.Fatal(err)
	}
	for i, v := range y {
		if want := 6*float32(i) + 1; v != want {
			t.Fatalf("y[%d] = %v, want %v", i, v, want)
		}
	}
}

// saxpyData makes a stream and device vectors x[i] = i and y[i] = 1 (freed by cleanup);
// y is the host buffer to read the result into.
func saxpyData(t *testing.T, g *Device, n int) (s *Stream, dx, dy uintptr, y []float32) {
	t.Helper()
	s, err := g.NewStream()
	if err != nil {
		t.Fatal(err)
	}
	x := make([]float32, n)
	y = make([]float32, n)
	for i := range x {
		x[i], y[i] = float32(i), 1
	}
	dx, _ = g.Alloc(4 * n)
	dy, _ = g.Alloc(4 * n)
	t.Cleanup(func() { g.Free(dx); g.Free(dy); s.Destroy() })
	s.CopyHtoD(dx, f32bytes(x))
	s.CopyHtoD(dy, f32bytes(y))
	return s, dx, dy, y
}
