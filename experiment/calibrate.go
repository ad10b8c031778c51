package experiment

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strings"

	"github.com/moerun/moerun/commbench"
	"github.com/moerun/moerun/costmodel"
	"github.com/moerun/moerun/dtype"
	"github.com/moerun/moerun/topology"
)

// Calibration is one link (with a bulk regime when the sizes call for one) and a bandwidth
// factor per collective fitted to a measured collectives sweep, and the model's error on
// every sample with the link alone and with the factors: how far the cost model is from
// what the backend does.
type Calibration struct {
	Link    costmodel.Link `json:"link"`
	Rows    []CalRow       `json:"rows"`
	MaxErr  float64        `json:"max_abs_error"`    // relative, over the rows
	MedErr  float64        `json:"median_abs_error"` // relative
	Samples int            `json:"samples"`
	// OpBandwidth is each collective's factor of the link's bandwidth (costmodel.FitAll),
	// and the errors with them.
	OpBandwidth map[costmodel.Op]float64 `json:"op_bandwidth"`
	MaxErrOp    float64                  `json:"max_abs_error_per_op"`
	MedErrOp    float64                  `json:"median_abs_error_per_op"`
	// Shipped is where costmodel.DefaultParams come from; the errors are theirs on this
	// sweep, over an NV18 ring (the class they were measured on): how well the model that
	// bin/layouts uses predicts this machine and world size before any refit.
	Shipped       string  `json:"shipped_params"`
	MaxErrShipped float64 `json:"max_abs_error_shipped"`
	MedErrShipped float64 `json:"median_abs_error_shipped"`
}

// CalRow is one measured collective beside its prediction.
type CalRow struct {
	Op          string  `json:"op"`
	Bytes       int64   `json:"size_bytes"`
	Ranks       int     `json:"ranks"`
	MeasuredUS  float64 `json:"measured_us"`
	PredictedUS float64 `json:"predicted_us"`
	Error       float64 `json:"error"` // (predicted − measured) / measured
	// With the collective's bandwidth factor.
	PredictedOpUS float64 `json:"predicted_per_op_us"`
	ErrorOp       float64 `json:"error_per_op"`
	// With costmodel.DefaultParams over an NV18 ring.
	ShippedUS    float64 `json:"predicted_shipped_us"`
	ErrorShipped float64 `json:"error_shipped"`
}

// Calibrate reads a `worker collectives --json` file (the world group), fits a link and
// the collectives' factors to the collectives of at least minBytes (costmodel.FitAll), and
// predicts every sample of at least minBytes with them.
func Calibrate(file string, minBytes int64) (*Calibration, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var reports []commbench.Report
	if err := json.Unmarshal(data, &reports); err != nil {
		return nil, fmt.Errorf("%s: expected the JSON of worker collectives --json: %v", file, err)
	}
	var samples []costmodel.Sample
	var rows []CalRow
	for _, r := range reports {
		if r.Group != "world" {
			continue
		}
		for _, res := range r.Results {
			if res.Size < minBytes || res.TimeUS <= 0 {
				continue
			}
			dt, err := dtype.Parse(res.DType)
			if err != nil {
				return nil, fmt.Errorf("%s: %v", file, err)
			}
			s := costmodel.Sample{Op: res.Op, N: res.Ranks, Bytes: float64(res.Size), Seconds: res.TimeUS / 1e6}
			if res.Op == commbench.AllGatherV || res.Op == commbench.ReduceScatterV {
				for _, c := range commbench.UnevenCounts(res.Count, res.Ranks) {
					s.Blocks = append(s.Blocks, float64(c*dt.Size()))
				}
			}
			samples = append(samples, s)
			rows = append(rows, CalRow{Op: string(res.Op), Bytes: res.Size, Ranks: res.Ranks, MeasuredUS: res.TimeUS})
		}
	}
	link, ops, err := costmodel.FitAll(samples)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	c := &Calibration{Link: link, Rows: rows, Samples: len(samples), OpBandwidth: ops}
	p := costmodel.Params{OpBandwidth: ops}
	shipped := costmodel.DefaultParams()
	c.Shipped = shipped.Source
	var errs, errsOp, errsShipped []float64
	for i, s := range samples {
		t, err := costmodel.Time(s.Op, s.N, s.Bytes, s.Blocks, link)
		if err != nil {
			return nil, err
		}
		tOp, err := costmodel.Time(s.Op, s.N, s.Bytes, s.Blocks, p.ForOp(s.Op, link))
		if err != nil {
			return nil, err
		}
		sp := shipped.ForRing(s.N)
		nv18, err := sp.Of(topology.NV(18))
		if err != nil {
			return nil, err
		}
		tShipped, err := costmodel.Time(s.Op, s.N, s.Bytes, s.Blocks, sp.ForOp(s.Op, nv18))
		if err != nil {
			return nil, err
		}
		r := &c.Rows[i]
		r.PredictedUS, r.PredictedOpUS, r.ShippedUS = 1e6*t, 1e6*tOp, 1e6*tShipped
		r.Error = (r.PredictedUS - r.MeasuredUS) / r.MeasuredUS
		r.ErrorOp = (r.PredictedOpUS - r.MeasuredUS) / r.MeasuredUS
		r.ErrorShipped = (r.ShippedUS - r.MeasuredUS) / r.MeasuredUS
		errs, errsOp = append(errs, math.Abs(r.Error)), append(errsOp, math.Abs(r.ErrorOp))
		errsShipped = append(errsShipped, math.Abs(r.ErrorShipped))
	}
	c.MedErr, c.MaxErr = medianMax(errs)
	c.MedErrOp, c.MaxErrOp = medianMax(errsOp)
	c.MedErrShipped, c.MaxErrShipped = medianMax(errsShipped)
	return c, nil
}

// medianMax is the median and the largest of v (not empty); it sorts v.
func medianMax(v []float64) (median, largest float64) {
	slices.Sort(v)
	return v[len(v)/2], v[len(v)-1]
}

// WriteCalibration prints the fitted link and every row.
func WriteCalibration(w io.Writer, c *Calibration) {
	bulk := ""
	if c.Link.BulkBandwidth > 0 {
		bulk = fmt.Sprintf(" (small messages), %.1f µs, %.2f GB/s (bulk)", 1e6*c.Link.BulkLatency, c.Link.BulkBandwidth/1e9)
	}
	fmt.Fprintf(w, "# fitted link: %.1f µs per step, %.2f GB/s%s; model error over %d samples: median %.1f %%, max %.1f %%\n",
		1e6*c.Link.Latency, c.Link.Bandwidth/1e9, bulk, c.Samples, 100*c.MedErr, 100*c.MaxErr)
	ops := make([]string, 0, len(c.OpBandwidth))
	for op, f := range c.OpBandwidth {
		ops = append(ops, fmt.Sprintf("%s %.2f", op, f))
	}
	slices.Sort(ops)
	fmt.Fprintf(w, "# with each collective's bandwidth factor (%s): median %.1f %%, max %.1f %%\n",
		strings.Join(ops, ", "), 100*c.MedErrOp, 100*c.MaxErrOp)
	fmt.Fprintf(w, "# shipped parameters (%s) over an NV18 ring: median %.1f %%, max %.1f %%\n",
		c.Shipped, 100*c.MedErrShipped, 100*c.MaxErrShipped)
	fmt.Fprintf(w, "%-17s %12s %6s %12s %12s %8s %12s %8s %12s %8s\n", "op", "bytes", "ranks", "measured µs", "predicted µs", "error", "per-op µs", "error", "shipped µs", "error")
	for _, r := range c.Rows {
		fmt.Fprintf(w, "%-17s %12d %6d %12.1f %12.1f %7.1f%% %12.1f %7.1f%% %12.1f %7.1f%%\n", r.Op, r.Bytes, r.Ranks, r.MeasuredUS, r.PredictedUS, 100*r.Error, r.PredictedOpUS, 100*r.ErrorOp, r.ShippedUS, 100*r.ErrorShipped)
	}
}
