package launch

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/moerun/moerun/rank"
	"github.com/moerun/moerun/topology"
)

// GPU orders (--gpu-order): which GPU each local rank gets. Any other value names a file.
const (
	// OrderAuto puts each TP group, the heaviest traffic, on the best-connected GPUs still
	// free. It keeps rank r on GPU r wherever that is already best (every DGX, PCIe boxes
	// whose pairs are consecutive), so it is the default.
	OrderAuto = "auto"
	// OrderIdentity gives local rank r the job's GPU r, as torchrun and vLLM do.
	OrderIdentity = "identity"
)

// The variables that tell the ranks their GPUs: CUDA_VISIBLE_DEVICES lists the job's GPUs
// by local rank, so that device LOCAL_RANK (what the worker, torch and vLLM open) is the
// rank's GPU; CUDA_DEVICE_ORDER=PCI_BUS_ID makes CUDA number GPUs as nvidia-smi and the
// topology do (CUDA's default, fastest first, may not).
const (
	envCUDAVisible = "CUDA_VISIBLE_DEVICES"
	envCUDAOrder   = "CUDA_DEVICE_ORDER"
)

// jobGPUs returns the GPUs of m that the job may use: all of them when CUDA_VISIBLE_DEVICES
// is not set (set false), else the ones it names, in its order, by nvidia-smi index or
// UUID. ok is false when the value names anything else (MIG devices, GPUs m does not have,
// "-1", nothing): launch then leaves it alone and places no rank on a GPU.
func jobGPUs(m *topology.Machine, visible string, set bool) (gpus []int, ok bool) {
	if !set {
		for i := range m.GPUs {
			gpus = append(gpus, i)
		}
		return gpus, true
	}
	for entry := range strings.SplitSeq(visible, ",") {
		entry = strings.TrimSpace(entry)
		g := -1
		if i, err := strconv.Atoi(entry); err == nil && i >= 0 && i < len(m.GPUs) && entry[0] != '+' {
			g = i
		}
		for i, gpu := range m.GPUs {
			if gpu.UUID != "" && gpu.UUID == entry {
				g = i
			}
		}
		if g < 0 || slices.Contains(gpus, g) {
			return nil, false
		}
		gpus = append(gpus, g)
	}
	return gpus, true
}

// gpuOrder returns the GPUs of local ranks 0, 1, …: len(gpus) of them, or np when there
// are fewer ranks than GPUs. Rank r gets order[r mod len(order)], as the worker opens
// device LOCAL_RANK modulo the GPUs it sees. file is the list of --gpu-order FILE (mode
// names the file); gpus must not be empty.
func gpuOrder(m *topology.Machine, gpus []int, l rank.Layout, mode string, file []int) ([]int, error) {
	np := l.World()
	slots := min(np, len(gpus))
	switch mode {
	case OrderIdentity:
		return slices.Clone(gpus[:slots]), nil
	case OrderAuto:
		return autoOrder(m, gpus, l.Groups(rank.TP), slots), nil
	}
	if np > len(gpus) {
		return nil, fmt.Errorf("--gpu-order %s: %d ranks for %d GPUs: a file gives every rank a GPU of its own", mode, np, len(gpus))
	}
	if len(file) != np {
		return nil, fmt.Errorf("--gpu-order %s: %d GPUs for %d ranks (one per rank)", mode, len(file), np)
	}
	owner := map[int]int{}
	for r, g := range file {
		if !slices.Contains(gpus, g) {
			return nil, fmt.Errorf("--gpu-order %s: rank %d: GPU %d is not one of the job's GPUs (%s)", mode, r, g, joinInts(gpus))
		}
		if q, dup := owner[g]; dup {
			return nil, fmt.Errorf("--gpu-order %s: GPU %d is given to rank %d and rank %d", mode, g, q, r)
		}
		owner[g] = r
	}
	return slices.Clone(file), nil
}

// parseGPUOrder reads a --gpu-order file: a JSON list of GPU indices, one per local rank.
func parseGPUOrder(name string, data []byte) ([]int, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	var list []int
	err := dec.Decode(&list)
	if err == nil && list == nil {
		err = errors.New("null")
	}
	if err == nil {
		if _, end := dec.Token(); end != io.EOF {
			err = errors.New("data after the list")
		}
	}
	if err != nil {
		return nil, fmt.Errorf("--gpu-order %s: expected a JSON list of GPU indices, one per rank, such as [0, 4, 1, 5]: %v", name, err)
	}
	return list, nil
}

// autoOrder places the TP groups of l one after the other, in rank order: each gets the
// free GPUs whose worst link inside the group is best (bestSet), members in rank order on
// GPUs in index order. Only ranks below slots have GPUs of their own (the others share
// them round robin), so a group is placed by its members below slots.
func autoOrder(m *topology.Machine, gpus []int, tp [][]int, slots int) []int {
	free := slices.Sorted(slices.Values(gpus))
	order := make([]int, slots)
	for _, group := range tp {
		var ranks []int
		for _, r := range group {
			if r < slots {
				ranks = append(ranks, r)
			}
		}
		if len(ranks) == 0 {
			continue
		}
		pick := bestSet(m, free, len(ranks))
		for i, r := range ranks {
			order[r] = pick[i]
		}
		free = slices.DeleteFunc(free, func(g int) bool { return slices.Contains(pick, g) })
	}
	return order
}

// linkCost ranks a link class for placement, lower being better: NVLink beats every PCIe
// path (PIX, PXB, PHB, NODE, SYS in that order), more bonded links beat fewer, and an
// NVLink whose count is unknown ranks below every counted one.
func linkCost(c topology.Class) int {
	cost := int(c.Kind) * 1024
	if c.Kind == topology.NVLink {
		cost -= min(c.Links, 1023)
	}
	return cost
}

// groupCost is the cost of a set of GPUs: its worst link, then the sum of its links.
func groupCost(m *topology.Machine, set []int) (worst, sum int) {
	for i, a := range set {
		for _, b := range set[i+1:] {
			c := linkCost(m.Link(a, b))
			worst = max(worst, c)
			sum += c
		}
	}
	return worst, sum
}

// maxCombinations bounds bestSet's exhaustive search (C(16, 8) = 12870 fits); beyond it a
// set is grown greedily.
const maxCombinations = 1 << 16

// bestSet returns the k GPUs of free (ascending) with the lowest groupCost, ties going to
// the lowest indices (the first set in lexicographic order), ascending. The search is
// exhaustive where that is cheap, as on every node of up to 16 GPUs.
func bestSet(m *topology.Machine, free []int, k int) []int {
	if k >= len(free) {
		return slices.Clone(free)
	}
	if !fewCombinations(len(free), k) {
		return growSet(m, free, k)
	}
	idx := make([]int, k)
	for i := range idx {
		idx[i] = i
	}
	set := make([]int, k)
	var best []int
	var bw, bs int
	for {
		for i, j := range idx {
			set[i] = free[j]
		}
		if w, s := groupCost(m, set); best == nil || w < bw || w == bw && s < bs {
			best, bw, bs = slices.Clone(set), w, s
		}
		i := k - 1 // the next combination in lexicographic order
		for i >= 0 && idx[i] == len(free)-k+i {
			i--
		}
		if i < 0 {
			return best
		}
		idx[i]++
		for j := i + 1; j < k; j++ {
			idx[j] = idx[j-1] + 1
		}
	}
}

// fewCombinations reports whether C(n, k) ≤ maxCombinations.
func fewCombinations(n, k int) bool {
	c := 1
	for i := range min(k, n-k) {
		c = c * (n - i) / (i + 1) // exact: a product of i+1 consecutive integers
		if c > maxCombinations {
			return false
		}
	}
	return true
}

// growSet is bestSet for large nodes: from each free GPU it grows a set by the free GPU
// whose worst (then summed) link to the set is best, lowest index first, and keeps the best
// set so grown.
func growSet(m *topology.Machine, free []int, k int) []int {
	var best []int
	var bw, bs int
	for _, seed := range free {
		set := []int{seed}
		for len(set) < k {
			pick, pw, ps := -1, 0, 0
			for _, g := range free {
				if slices.Contains(set, g) {
					continue
				}
				w, s := 0, 0
				for _, h := range set {
					c := linkCost(m.Link(g, h))
					w, s = max(w, c), s+c
				}
				if pick < 0 || w < pw || w == pw && s < ps {
					pick, pw, ps = g, w, s
				}
			}
			set = append(set, pick)
		}
		slices.Sort(set)
		w, s := groupCost(m, set)
		if best == nil || w < bw || w == bw && (s < bs || s == bs && slices.Compare(set, best) < 0) {
			best, bw, bs = set, w, s
		}
	}
	return best
}

// joinInts writes 0,4,1,5.
func joinInts(v []int) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = strconv.Itoa(x)
	}
	return strings.Join(s, ",")
}
