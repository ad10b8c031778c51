package experiment

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moerun/moerun/commbench"
	"github.com/moerun/moerun/costmodel"
)

// A sweep made by a known link calibrates back to it, with no error; small sizes are left
// out; a file that is not a sweep is one clear line.
func TestCalibrate(t *testing.T) {
	link := costmodel.Link{Latency: 25e-6, Bandwidth: 2e9}
	var res []commbench.Result
	for _, op := range []commbench.Op{commbench.AllGather, commbench.ReduceScatter, commbench.AllGatherV, commbench.Broadcast} {
		for _, size := range []int64{64 << 10, 1 << 20, 16 << 20} {
			count := int(size / 4)
			var blocks []float64
			if op == commbench.AllGatherV {
				for _, c := range commbench.UnevenCounts(count, 4) {
					blocks = append(blocks, float64(4*c))
				}
			}
			tm, err := costmodel.Time(op, 4, float64(size), blocks, link)
			if err != nil {
				t.Fatal(err)
			}
			res = append(res, commbench.Result{Op: op, Size: size, Count: count, DType: "float32", TimeUS: 1e6 * tm, Ranks: 4})
		}
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "sweep.json")
	b, _ := json.Marshal([]commbench.Report{{Group: "world", Ranks: 4, Results: res}})
	os.WriteFile(file, b, 0o644)
	c, err := Calibrate(file, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if c.Samples != 8 || math.Abs(c.Link.Latency-link.Latency) > 1e-9 || math.Abs(c.Link.Bandwidth/link.Bandwidth-1) > 1e-6 || c.MaxErr > 1e-6 {
		t.Errorf("calibration %+v", c)
	}
	// The shipped parameters (an NV18 ring, far faster than this made-up link) are beside
	// the fit, with their error: the sweep's times against theirs.
	if c.Shipped != costmodel.DefaultParams().Source || c.MedErrShipped < 0.5 || c.Rows[0].ShippedUS >= c.Rows[0].MeasuredUS {
		t.Errorf("shipped parameters: %q, median error %g, first row %+v", c.Shipped, c.MedErrShipped, c.Rows[0])
	}
	var out, errb bytes.Buffer
	if code := Main(context.Background(), []string{"--calibrate", file}, &out, &errb); code != 0 || !strings.Contains(out.String(), "fitted link: 25.0 µs per step, 2.00 GB/s") ||
		!strings.Contains(out.String(), "# shipped parameters (NVLink calibrated on 4 × H200") {
		t.Errorf("exit %d: %s%s", code, out.String(), errb.String())
	}
	bad := filepath.Join(dir, "bad.json")
	os.WriteFile(bad, []byte(`{"rows": 1}`), 0o644)
	out.Reset()
	errb.Reset()
	if code := Main(context.Background(), []string{"--calibrate", bad}, &out, &errb); code != 2 || !strings.Contains(errb.String(), "expected the JSON of worker collectives --json") {
		t.Errorf("bad file: exit %d, %q", code, errb.String())
	}
}
