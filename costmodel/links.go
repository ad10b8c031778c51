package costmodel

import (
	"fmt"

	"github.com/moerun/moerun/topology"
)

// Params gives every link class a Link: what NCCL reaches over one hop of that class.
type Params struct {
	// NVLinkPerLink is the bandwidth of one NVLink of a bonded set (NV18: 18 of them), and
	// NVLinkLatency the per-step latency of an NVLink ring.
	NVLinkPerLink float64 `json:"nvlink_per_link_bytes_per_s"`
	NVLinkLatency float64 `json:"nvlink_latency_s"`
	// NVLinkBulkPerLink and NVLinkBulkLatency are the bulk regime of an NVLink ring (Link);
	// zero: one regime.
	NVLinkBulkPerLink float64 `json:"nvlink_bulk_per_link_bytes_per_s,omitempty"`
	NVLinkBulkLatency float64 `json:"nvlink_bulk_latency_s,omitempty"`
	// PCIe and NET classes (PIX, PXB, PHB, NODE, SYS, NET) by name.
	Classes map[string]Link `json:"classes"`
	// OpBandwidth multiplies a ring's bandwidth per collective: NCCL runs each with its own
	// algorithm and protocol, which reach different shares of a link (on 2 × H200 a
	// broadcast moves 1 GiB 1.4 times as fast as an all-gather's share of it). Missing
	// collectives take 1. bin/layouts --calibrate fits them (FitAll).
	OpBandwidth map[Op]float64 `json:"op_bandwidth,omitempty"`
	// Pair, when set, replaces the NVLink numbers and OpBandwidth for a ring of two GPUs
	// (ForRing): NCCL reaches less of NVLink between two GPUs than around larger rings.
	Pair *PairParams `json:"nvlink_pair,omitempty"`
	// Source says where the numbers come from (measured where, or datasheet).
	Source string `json:"source"`
}

// ForOp is the link l as collective op sees it (OpBandwidth).
func (p Params) ForOp(op Op, l Link) Link {
	if f, ok := p.OpBandwidth[op]; ok && f > 0 {
		l.Bandwidth *= f
		l.BulkBandwidth *= f
	}
	return l
}

// PairParams are NVLink and the collectives' factors for a ring of two GPUs (Params.Pair).
type PairParams struct {
	NVLinkPerLink     float64        `json:"nvlink_per_link_bytes_per_s"`
	NVLinkLatency     float64        `json:"nvlink_latency_s"`
	NVLinkBulkPerLink float64        `json:"nvlink_bulk_per_link_bytes_per_s,omitempty"`
	NVLinkBulkLatency float64        `json:"nvlink_bulk_latency_s,omitempty"`
	OpBandwidth       map[Op]float64 `json:"op_bandwidth,omitempty"`
}

// ForRing is p as a ring of n GPUs sees it: Pair's numbers in place of the NVLink ones and
// the collectives' factors when n is 2 and p has them, else p.
func (p Params) ForRing(n int) Params {
	if n != 2 || p.Pair == nil {
		return p
	}
	q := p
	q.NVLinkPerLink, q.NVLinkLatency = p.Pair.NVLinkPerLink, p.Pair.NVLinkLatency
	q.NVLinkBulkPerLink, q.NVLinkBulkLatency = p.Pair.NVLinkBulkPerLink, p.Pair.NVLinkBulkLatency
	q.OpBandwidth, q.Pair = p.Pair.OpBandwidth, nil
	return q
}

// DefaultParams are calibrated where we could measure and from datasheets elsewhere:
//   - NVLink, rings of 3 or more GPUs: 4 × H200, NV18 through NVSwitch, NCCL 2.28.3
//     (docs/PERFORMANCE.md, session 5: `bin/layouts --calibrate` of the 1 MiB–1 GiB part of
//     `make bench-gpu`'s np-4 sweep, 66 samples, median error 7.5 %): small messages 2.9 µs
//     per step and 203 GB/s (11.3 GB/s per link), bulk 9.6 µs and 320 GB/s (17.8 GB/s per
//     link), and each collective's share of that (OpBandwidth) from the same fit;
//   - NVLink, rings of two (Pair): 2 × H200, same NCCL (session 3, 66 samples, median
//     8.3 %): 6.0 µs and 128 GB/s, bulk 16.4 µs and 282 GB/s. NCCL reaches less between
//     two GPUs than around four: the pair's numbers predict the np-4 sweep 33 % slow
//     (median; 146 % at worst), so each ring size takes its own fit;
//   - the collectives' factors serve every link class, for want of PCIe and NET
//     measurements (they are NCCL's algorithms as much as the links');
//   - PCIe (not measured): Gen5 x16 is 64 GB/s per direction; NCCL reaches about 80 %
//     through one switch (PIX), less through more bridges and the CPU;
//   - NET (not measured): a 400 Gb/s NIC (NDR InfiniBand) is 50 GB/s; NCCL's IB transport
//     reaches about 90 % at large sizes, with ~12 µs per step.
//
// Rings of 8 on NVLink were never measured (no 8-GPU host lent): they take the 4-GPU fit.
func DefaultParams() Params {
	return Params{
		NVLinkPerLink:     11.26e9,
		NVLinkLatency:     2.89e-6,
		NVLinkBulkPerLink: 17.77e9,
		NVLinkBulkLatency: 9.59e-6,
		OpBandwidth: map[Op]float64{
			AllGather: 0.94, AllGatherV: 0.78, ReduceScatter: 0.95, ReduceScatterV: 0.84,
			AllReduce: 1.20, Broadcast: 1.12,
		},
		Pair: &PairParams{
			NVLinkPerLink:     7.12e9,
			NVLinkLatency:     6.0e-6,
			NVLinkBulkPerLink: 15.67e9,
			NVLinkBulkLatency: 16.4e-6,
			OpBandwidth: map[Op]float64{
				AllGather: 0.83, AllGatherV: 0.82, ReduceScatter: 0.80, ReduceScatterV: 0.87,
				AllReduce: 1.20, Broadcast: 1.25,
			},
		},
		Classes: map[string]Link{
			"PIX":  {Latency: 6e-6, Bandwidth: 50e9},
			"PXB":  {Latency: 7e-6, Bandwidth: 45e9},
			"PHB":  {Latency: 8e-6, Bandwidth: 40e9},
			"NODE": {Latency: 9e-6, Bandwidth: 35e9},
			"SYS":  {Latency: 11e-6, Bandwidth: 25e9},
			"NET":  {Latency: 12e-6, Bandwidth: 45e9},
		},
		Source: "NVLink calibrated on 4 × H200 (NV18) and, for rings of two, 2 × H200, 2026-11-26; PCIe and NET from datasheets",
	}
}

// Of is the Link of one hop of class c.
func (p Params) Of(c topology.Class) (Link, error) {
	switch c.Kind {
	case topology.NVLink:
		n := c.Links
		if n == 0 {
			n = 18 // an unknown count: assume an H100's full set
		}
		l := Link{Latency: p.NVLinkLatency, Bandwidth: float64(n) * p.NVLinkPerLink}
		if p.NVLinkBulkPerLink > 0 {
			l.BulkLatency, l.BulkBandwidth = p.NVLinkBulkLatency, float64(n)*p.NVLinkBulkPerLink
		}
		return l, nil
	case topology.Self:
		return Link{Latency: 0, Bandwidth: 1e15}, nil
	}
	if l, ok := p.Classes[c.String()]; ok {
		return l, nil
	}
	return Link{}, fmt.Errorf("costmodel: no parameters for link class %q", c)
}

// Ring is the Link a collective over gpus (global GPU indices, in ring order) sees: the
// slowest hop of the ring (bandwidth) and the largest per-step latency. NCCL's rings visit
// a node's GPUs before crossing to the next node, which is the order of the group's ranks
// when ranks are laid out node by node, as the launcher does.
func (p Params) Ring(t *topology.Topology, gpus []int) (Link, error) {
	if len(gpus) < 2 {
		return Link{Latency: 0, Bandwidth: 1e15}, nil
	}
	worst := Link{Bandwidth: 1e18, BulkBandwidth: 1e18}
	bulk := false
	for i, g := range gpus {
		l, err := p.Of(t.Link(g, gpus[(i+1)%len(gpus)]))
		if err != nil {
			return Link{}, err
		}
		worst.Latency = max(worst.Latency, l.Latency)
		worst.Bandwidth = min(worst.Bandwidth, l.Bandwidth)
		bl, bb := l.bulk()
		worst.BulkLatency = max(worst.BulkLatency, bl)
		worst.BulkBandwidth = min(worst.BulkBandwidth, bb)
		bulk = bulk || l.hasBulk()
	}
	if !bulk {
		worst.BulkLatency, worst.BulkBandwidth = 0, 0
	}
	return worst, nil
}
