package cuda

import (
	"bytes"
	"runtime"
	"testing"
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
