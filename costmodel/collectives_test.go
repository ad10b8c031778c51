package costmodel

import (
	"math"
	"testing"
)

func near(a, b float64) bool { return math.Abs(a-b) <= 1e-12+1e-9*math.Abs(b) }

// Each formula against hand-computed values on a link of 10 µs and 100 GB/s.
func TestTimeByHand(t *testing.T) {
	l := Link{Latency: 10e-6, Bandwidth: 100e9}
	const mib = 1 << 20
	for _, c := range []struct {
		op     Op
		n      int
		bytes  float64
		blocks []float64
		want   float64
	}{
		// 7 steps of 10 µs + 7/8 of 64 MiB at 100 GB/s.
		{AllGather, 8, 64 * mib, nil, 7*10e-6 + 7.0/8*64*mib/100e9},
		{ReduceScatter, 2, 8192, nil, 10e-6 + 0.5*8192/100e9},
		// Uneven blocks of 3 and 5 MiB over 2 ranks: 1 step, 1 extra broadcast, half of 8 MiB.
		{AllGatherV, 2, 0, []float64{3 * mib, 5 * mib}, 2*10e-6 + 0.5*8*mib/100e9},
		// An empty block adds no broadcast.
		{ReduceScatterV, 4, 0, []float64{0, mib, mib, 2 * mib}, (3+2)*10e-6 + 0.75*4*mib/100e9},
		// 1 GiB all-reduce on 8: the ring, 14 steps and 2·7/8 of the buffer.
		{AllReduce, 8, 1024 * mib, nil, 14*10e-6 + 2*7.0/8*1024*mib/100e9},
		// 8 KiB on 64 ranks: the tree (12 latencies + twice the buffer) beats the ring (126).
		{AllReduce, 64, 8192, nil, 12*10e-6 + 2*8192/100e9},
		{Broadcast, 4, mib, nil, 3*10e-6 + mib/100e9},
		{AllGather, 1, 64 * mib, nil, 0},
	} {
		got, err := Time(c.op, c.n, c.bytes, c.blocks, l)
		if err != nil || !near(got, c.want) {
			t.Errorf("%s n=%d: %g, %v; want %g", c.op, c.n, got, err, c.want)
		}
	}
	if _, err := Time(AllGatherV, 4, 0, []float64{1}, l); err == nil {
		t.Error("a -v collective with too few blocks was costed")
	}
	if _, err := Time("gather", 4, 1, nil, l); err == nil {
		t.Error("an unknown collective was costed")
	}
	if _, err := Time(AllGather, 4, 1, nil, Link{Latency: 1e-6}); err == nil {
		t.Error("a link without bandwidth was accepted")
	}
	// Bus bandwidth undoes the formula's bandwidth term at large sizes.
	tm, _ := Time(AllGather, 8, 1<<30, nil, Link{Bandwidth: 100e9})
	if bw := BusBandwidth(AllGather, 8, 1<<30, tm); !near(bw, 100e9) {
		t.Errorf("bus bandwidth %g, want 100e9", bw)
	}
}

// Fit recovers a link from times made with it, and refuses samples that cannot fix it.
func TestFit(t *testing.T) {
	want := Link{Latency: 20e-6, Bandwidth: 3e9}
	var samples []Sample
	for _, op := range []Op{AllGather, ReduceScatter, AllReduce, Broadcast} {
		for _, size := range []float64{1 << 20, 16 << 20, 64 << 20} {
			tm, _ := Time(op, 4, size, nil, Link{Latency: want.Latency, Bandwidth: want.Bandwidth})
			if op == AllReduce { // the ring form, as at these sizes
				tm = 6*want.Latency + 1.5*size/want.Bandwidth
			}
			samples = append(samples, Sample{Op: op, N: 4, Bytes: size, Seconds: tm})
		}
	}
	got, err := Fit(samples)
	if err != nil || math.Abs(got.Latency-want.Latency) > 1e-9 || math.Abs(got.Bandwidth/want.Bandwidth-1) > 1e-9 {
		t.Errorf("fit %+v, %v; want %+v", got, err, want)
	}
	if _, err := Fit(samples[:1]); err == nil {
		t.Error("one sample fixed two unknowns")
	}
	if _, err := Fit([]Sample{{Op: AllGather, N: 1, Bytes: 1, Seconds: 1}, {Op: AllGather, N: 1, Bytes: 2, Seconds: 1}}); err == nil {
		t.Error("samples of one rank were accepted")
	}
}

// Per-collective factors recovered exactly from samples made with them; ForOp applies
// them; a collective with no factor keeps the link.
func TestFitOps(t *testing.T) {
	l := Link{Latency: 8e-6, Bandwidth: 250e9}
	want := map[Op]float64{AllGather: 1, Broadcast: 1.4, AllReduce: 1.25}
	p := Params{OpBandwidth: want}
	var samples []Sample
	for op := range want {
		for _, size := range []float64{1 << 20, 64 << 20, 1 << 30} {
			lk := p.ForOp(op, l)
			tm := 1*lk.Latency + 0.5*size/lk.Bandwidth // the ring form over 2 ranks
			if op == AllReduce {
				tm = 2*lk.Latency + size/lk.Bandwidth
			} else if op == Broadcast {
				tm = lk.Latency + size/lk.Bandwidth
			}
			samples = append(samples, Sample{Op: op, N: 2, Bytes: size, Seconds: tm})
		}
	}
	got, err := FitOps(samples, l)
	if err != nil {
		t.Fatal(err)
	}
	for op, f := range want {
		if math.Abs(got[op]/f-1) > 1e-9 {
			t.Errorf("%s: factor %g, want %g", op, got[op], f)
		}
	}
	if len(got) != len(want) {
		t.Errorf("factors for %v, want only %v", got, want)
	}
	if lk := p.ForOp(ReduceScatter, l); lk != l {
		t.Errorf("reduce-scatter without a factor: %+v, want %+v", lk, l)
	}
	if _, err := FitOps([]Sample{{Op: AllGather, N: 2, Bytes: 1 << 20, Seconds: 1e-9}}, l); err == nil {
		t.Error("a sample faster than the latency alone gave a factor")
	}
}

// Two regimes: Time takes the faster (by hand), and FitAll recovers both from samples of
// one collective made with them (sizes on both sides of the crossing).
func TestTwoRegimes(t *testing.T) {
	l := Link{Latency: 5e-6, Bandwidth: 100e9, BulkLatency: 30e-6, BulkBandwidth: 300e9}
	// all-gather of 2 ranks: one step, half the buffer. Crossing: 5 µs + B/200e9 = 30 µs + B/600e9 → B = 7.5 MB.
	for _, c := range []struct{ bytes, want float64 }{{1e6, 5e-6 + 0.5e6/100e9}, {64e6, 30e-6 + 32e6/300e9}} {
		if got, err := Time(AllGather, 2, c.bytes, nil, l); err != nil || math.Abs(got-c.want) > 1e-12 {
			t.Errorf("%g bytes: %g, %v; want %g", c.bytes, got, err, c.want)
		}
	}
	var samples []Sample
	for _, size := range []float64{1 << 20, 2 << 20, 4 << 20, 64 << 20, 256 << 20, 1 << 30} {
		tm, _ := Time(AllGather, 2, size, nil, l)
		samples = append(samples, Sample{Op: AllGather, N: 2, Bytes: size, Seconds: tm})
	}
	got, ops, err := FitAll(samples)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ got, want float64 }{{got.Latency, l.Latency}, {got.Bandwidth, l.Bandwidth}, {got.BulkLatency, l.BulkLatency}, {got.BulkBandwidth, l.BulkBandwidth}, {ops[AllGather], 1}} {
		if math.Abs(c.got/c.want-1) > 1e-6 {
			t.Errorf("fit %+v, factors %v; want %+v and 1", got, ops, l)
			break
		}
	}
	bad := Link{Latency: 1e-6, Bandwidth: 1e9, BulkLatency: 1e-6}
	if _, err := Time(AllGather, 2, 1, nil, bad); err == nil {
		t.Error("a bulk regime without a bandwidth was accepted")
	}
}
