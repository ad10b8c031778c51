package worker

import (
	"strings"

	"github.com/moerun/moerun/moe"
)

// Peak rates of one GPU for the bound (performance issue: 3.35 TB/s of HBM and 790
// TFLOP/s of dense bf16 on an H100, the latter measured). An H200 is the same chip with
// 4.8 TB/s of HBM3e (datasheet); any other device takes the H100's figures.
type peaks struct {
	HBM   float64 `json:"hbm_bytes_per_s"`
	FLOPs float64 `json:"flops_per_s"`
}

func devicePeaks(name string) peaks {
	if strings.Contains(name, "H200") {
		return peaks{HBM: 4.8e12, FLOPs: 790e12}
	}
	return peaks{HBM: 3.35e12, FLOPs: 790e12}
}

// routeStats adds up, over the chunks of one forward pass, what this rank's experts do:
// the local experts that got at least one row in each chunk (each chunk reads their
// weights again), and the (row, expert) slots they compute.
type routeStats struct {
	touched, slots int
	chunks, rows   int
	counts         []int
}

// add counts one chunk's expert ids [rows, K] (host values) against the global→local map.
func (st *routeStats) add(ids []float32, rows int, expertMap []int32, local int) {
	if cap(st.counts) < local {
		st.counts = make([]int, local)
	}
	c := st.counts[:local]
	clear(c)
	for _, v := range ids {
		l := int(v)
		if expertMap != nil {
			l = int(expertMap[l])
		}
		if l >= 0 && l < local {
			c[l]++
		}
	}
	for _, n := range c {
		if n > 0 {
			st.touched++
			st.slots += n
		}
	}
	st.chunks++
	st.rows += rows
}

// work is one rank's share of a forward pass: the weight bytes it must read and the
// useful FLOPs it computes.
type work struct {
	Bytes, FLOPs float64
}

// rankWork turns the stats of rank s's forward pass over localRows of its own tokens into
// bytes and FLOPs: every touched expert's gate, up and down slices once per chunk, the
// shared experts' slice once per chunk, 2·3 FLOPs per weight per slot.
func rankWork(s moe.Shard, st routeStats, localRows int) work {
	c := s.Cfg
	dt, _ := c.ElementType()
	esz := float64(dt.Size())
	h, i := float64(c.PaddedHidden()), float64(s.ISlice)
	w := work{
		Bytes: float64(st.touched) * 3 * i * h * esz,
		FLOPs: float64(st.slots) * 6 * i * h,
	}
	if c.SharedIntermediate > 0 {
		sh := 3 * float64(s.SharedSlice) * float64(c.Hidden)
		w.Bytes += float64(st.chunks) * sh * esz
		w.FLOPs += 2 * sh * float64(localRows)
	}
	if c.Latent > 0 {
		l := 2 * float64(c.Latent) * float64(c.Hidden)
		w.Bytes += l * esz
		w.FLOPs += 2 * l * float64(localRows)
	}
	return w
}

// bound is the fastest a forward pass can go on a GPU with peaks p: the slower of reading
// the weights and computing, plus the collectives (measured alone), and which of the two
// limits it ("hbm" or "flop").
func bound(w work, commSeconds float64, p peaks) (total, hbm, flop float64, kind string) {
	hbm, flop = w.Bytes/p.HBM, w.FLOPs/p.FLOPs
	kind = "hbm"
	if flop > hbm {
		kind = "flop"
	}
	return max(hbm, flop) + commSeconds, hbm, flop, kind
}
