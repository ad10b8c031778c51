// Package experiment ranks rank layouts and expert placements of one MoE layer on one
// machine by their predicted forward time (package costmodel), as a table, its JSON twin
// and a PNG bar chart: the first topology-aware experiment a user runs (bin/layouts).
package experiment

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"

	"github.com/moerun/moerun/costmodel"
	"github.com/moerun/moerun/moe"
	"github.com/moerun/moerun/rank"
	"github.com/moerun/moerun/topology"
)

// Candidate is one way to run the layer: a layout and an expert placement.
type Candidate struct {
	TP, DP, PCP int
	EP          bool
	Placement   string // linear or round_robin (EP only)
}

func (c Candidate) String() string {
	s := fmt.Sprintf("tp%d dp%d", c.TP, c.DP)
	if c.PCP > 1 {
		s += fmt.Sprintf(" pcp%d", c.PCP)
	}
	if c.EP {
		s += " ep " + c.Placement
	}
	return s
}

// Candidates lists every layout of world ranks with tp·dp·pcp = world (pp 1), with and
// without EP, and both placements under EP, that the layer accepts.
func Candidates(cfg moe.Config, world int) []Candidate {
	var out []Candidate
	for tp := 1; tp <= world; tp++ {
		for pcp := 1; tp*pcp <= world; pcp++ {
			if world%(tp*pcp) != 0 {
				continue
			}
			dp := world / (tp * pcp)
			for _, ep := range []bool{false, true} {
				places := []string{"linear"}
				if ep {
					places = []string{"linear", "round_robin"}
				}
				for _, p := range places {
					c := Candidate{TP: tp, DP: dp, PCP: pcp, EP: ep, Placement: p}
					if _, err := c.layout(cfg, world); err == nil {
						out = append(out, c)
					}
				}
			}
		}
	}
	return out
}

// layout checks that the layer can be sharded this way (every rank's shard plans).
func (c Candidate) layout(cfg moe.Config, world int) (rank.Layout, error) {
	l, err := rank.NewLayout(world, c.TP, c.PCP, 1, c.DP, c.EP)
	if err != nil {
		return l, err
	}
	cfg.Placement = c.Placement
	for r := range world {
		if _, err := moe.NewShard(cfg, l, r); err != nil {
			return l, err
		}
	}
	return l, nil
}

// Result is one candidate's prediction.
type Result struct {
	Layout      string            `json:"layout"`
	Placement   string            `json:"placement,omitempty"`
	PredictedMs float64           `json:"predicted_ms"`
	Phases      []costmodel.Phase `json:"phases"`
}

// Rank predicts every candidate with tokens per rank on each DP rank (the same total of
// tokens for every layout: world·tokens tokens in all, spread over its DP ranks), passes
// overlapped from overlapRows dispatched rows a chunk (costmodel.Forward.OverlapRows), and
// returns them fastest first.
func Rank(cfg moe.Config, t *topology.Topology, world, tokensPerGPU int, cands []Candidate, p costmodel.Params, dev costmodel.Device, overlapRows int) ([]Result, error) {
	var out []Result
	for _, c := range cands {
		l, err := c.layout(cfg, world)
		if err != nil {
			return nil, fmt.Errorf("%v: %w", c, err)
		}
		cc := cfg
		cc.Placement = c.Placement
		// The same work for every layout: world·tokensPerGPU tokens over its DP ranks.
		tokens := make([]int, l.DP)
		for i := range tokens {
			tokens[i] = tokensPerGPU * world / l.DP
		}
		phases, total, _, err := costmodel.Forward{Cfg: cc, Layout: l, Tokens: tokens, Topology: t, Params: p, Device: dev,
			OverlapRows: overlapRows}.Predict()
		if err != nil {
			return nil, fmt.Errorf("%v: %w", c, err)
		}
		res := Result{Layout: l.String(), PredictedMs: 1e3 * total, Phases: phases}
		if c.EP {
			res.Placement = c.Placement
		}
		out = append(out, res)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].PredictedMs < out[j].PredictedMs })
	return out, nil
}

// WriteTable prints the ranking: rank, layout, placement, predicted ms, the phases.
func WriteTable(w io.Writer, rs []Result) {
	fmt.Fprintf(w, "%4s  %-32s %-12s %12s", "rank", "layout", "placement", "predicted ms")
	for _, n := range costmodel.PhaseNames {
		fmt.Fprintf(w, " %11s", n)
	}
	fmt.Fprintln(w)
	for i, r := range rs {
		fmt.Fprintf(w, "%4d  %-32s %-12s %12.4f", i+1, r.Layout, orDash(r.Placement), r.PredictedMs)
		for _, ph := range r.Phases {
			fmt.Fprintf(w, " %11.4f", 1e3*ph.Seconds)
		}
		fmt.Fprintln(w)
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// WriteJSON is WriteTable's twin.
func WriteJSON(w io.Writer, rs []Result) error {
	e := json.NewEncoder(w)
	e.SetIndent("", "  ")
	return e.Encode(rs)
}

// WritePlot draws the ranking as horizontal bars (fastest at the top) into a PNG.
func WritePlot(w io.Writer, title string, rs []Result) error {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "predicted ms per forward"
	vals := make(plotter.Values, len(rs))
	names := make([]string, len(rs))
	for i, r := range slices.Backward(rs) {
		vals[len(rs)-1-i] = r.PredictedMs
		names[len(rs)-1-i] = strings.TrimSpace(r.Layout + " " + r.Placement)
	}
	bars, err := plotter.NewBarChart(vals, vg.Points(10))
	if err != nil {
		return err
	}
	bars.Horizontal = true
	p.Add(bars)
	p.NominalY(names...)
	wt, err := p.WriterTo(18*vg.Centimeter, vg.Length(2+0.6*float64(len(rs)))*vg.Centimeter, "png")
	if err != nil {
		return err
	}
	_, err = wt.WriteTo(w)
	return err
}
