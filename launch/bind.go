package launch

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strings"

	"github.com/moerun/moerun/rank"
	"github.com/moerun/moerun/topology"
)

// Bind modes (--bind): which CPUs each rank runs on. A rank's CPUs are those of its GPU
// (topology.GPU.CPUs, else its NUMA node's); a rank without a GPU (no GPU on the machine)
// takes the NUMA nodes that have CPUs in turn, rank r the (r mod n)-th.
const (
	BindNone = "none" // not bound: the ranks inherit the launcher's CPUs
	BindNUMA = "numa" // all the CPUs of the rank's NUMA node
	BindCore = "core" // an even share of those CPUs among the ranks that share them
)

// rankPlace is where one rank runs.
type rankPlace struct {
	gpu   int    // index in the machine (nvidia-smi's); -1: none
	busID string // the GPU's PCI bus id, when known
	numa  int    // NUMA node id; -1: none (--bind none without a GPU, or unknown)
	cpus  []int  // the CPUs it is bound to; nil: not bound
}

// placement is where every rank of a job runs.
type placement struct {
	ranks []rankPlace
	// visible is CUDA_VISIBLE_DEVICES for every rank, the ranks' GPUs by local rank; ""
	// leaves the environment alone (no GPU placed).
	visible string
	// apply says that the CPUs are bound: the topology is this host's, discovered. With a
	// topology file they are reported only, as its CPU numbers need not be this host's.
	apply bool
	notes []string // said before the job starts
}

// placeRequest is what a placement is computed from.
type placeRequest struct {
	machine *topology.Machine // nil: unknown (no GPU, no NUMA node)
	layout  rank.Layout
	bind    string
	order   string // OrderAuto, OrderIdentity, or the name of a --gpu-order file
	file    []int  // that file's list
	// visible is the launcher's CUDA_VISIBLE_DEVICES, if set.
	visible    string
	visibleSet bool
	// allowed are the CPUs the launcher may run on (its affinity: taskset, cgroup cpuset),
	// to which every rank's CPUs are clamped; nil when the CPUs are reported only.
	allowed []int
	apply   bool
}

// place computes where every rank runs. It does no I/O.
func place(q placeRequest) (placement, error) {
	m := q.machine
	if m == nil {
		m = &topology.Machine{}
	}
	p := placement{apply: q.apply}
	var order []int
	if len(m.GPUs) > 0 {
		gpus, ok := jobGPUs(m, q.visible, q.visibleSet)
		if ok {
			var err error
			if order, err = gpuOrder(m, gpus, q.layout, q.order, q.file); err != nil {
				return p, err
			}
			p.visible = joinInts(order)
		} else {
			p.notes = append(p.notes, fmt.Sprintf("%s=%q names no GPU of this machine by index or UUID: left as it is, and no rank is placed on a GPU", envCUDAVisible, q.visible))
		}
	}
	if order == nil && q.order != OrderAuto && q.order != OrderIdentity {
		return p, fmt.Errorf("--gpu-order %s: no GPU to place the ranks on", q.order)
	}

	var cpuNodes []topology.NUMANode // the nodes that CPU workers take in turn
	for _, n := range m.NUMA {
		if n.CPUs != "" {
			cpuNodes = append(cpuNodes, n)
		}
	}
	p.ranks = make([]rankPlace, q.layout.World())
	for r := range p.ranks {
		pl := rankPlace{gpu: -1, numa: -1}
		var list topology.CPUList
		switch {
		case order != nil:
			g := m.GPUs[order[r%len(order)]]
			pl.gpu, pl.busID, pl.numa, list = g.Index, g.PCIBusID, g.NUMANode, g.CPUs
			if list == "" {
				n, _ := m.NUMANodeByID(g.NUMANode)
				list = n.CPUs
			}
		case len(cpuNodes) > 0:
			n := cpuNodes[r%len(cpuNodes)]
			pl.numa, list = n.ID, n.CPUs
		}
		if q.bind == BindNone {
			if pl.gpu < 0 {
				pl.numa = -1
			}
			p.ranks[r] = pl
			continue
		}
		cpus, err := list.CPUs()
		if err != nil {
			return p, fmt.Errorf("rank %d: CPUs %q: %w", r, list, err)
		}
		if cpus == nil { // not known: all that the launcher has
			cpus = q.allowed
		}
		if q.allowed != nil {
			in := slices.DeleteFunc(slices.Clone(cpus), func(c int) bool { return !slices.Contains(q.allowed, c) })
			if len(in) == 0 {
				return p, fmt.Errorf("rank %d: %s NUMA node %d has CPUs %s, none of which launch may run on here (%s): --bind none starts the ranks unbound",
					r, gpuOf(pl), pl.numa, list, topology.FormatCPUs(q.allowed))
			}
			cpus = in
		}
		pl.cpus = cpus
		p.ranks[r] = pl
	}
	if q.bind == BindCore {
		shareCPUs(p.ranks)
	}
	return p, nil
}

func gpuOf(pl rankPlace) string {
	if pl.gpu < 0 {
		return "its"
	}
	return fmt.Sprintf("GPU %d's", pl.gpu)
}

// shareCPUs gives each rank an even share of its CPUs among the ranks bound to the same
// set, the j-th of k ranks (in rank order) the j-th share (cpuShare).
func shareCPUs(ranks []rankPlace) {
	sharers := map[string][]int{}
	var keys []string
	for r, pl := range ranks {
		if pl.cpus == nil {
			continue
		}
		key := string(topology.FormatCPUs(pl.cpus))
		if sharers[key] == nil {
			keys = append(keys, key)
		}
		sharers[key] = append(sharers[key], r)
	}
	for _, key := range keys {
		rs := sharers[key]
		cpus := ranks[rs[0]].cpus
		for j, r := range rs {
			ranks[r].cpus = cpuShare(cpus, len(rs), j)
		}
	}
}

// cpuShare is the j-th of k even shares of cpus (ascending). When every run of consecutive
// CPUs holds at least k, the share takes the j-th k-th of every run: Linux numbers a core's
// second hardware thread a whole socket later (0-55,112-167: CPU 0 and 112 are one core),
// so a rank gets both threads of its cores and no core is split between ranks. Otherwise
// the share is the j-th k-th of the list, and with fewer CPUs than ranks, rank j gets CPU
// j mod n alone.
func cpuShare(cpus []int, k, j int) []int {
	n := len(cpus)
	if n < k {
		return []int{cpus[j%n]}
	}
	var runs [][]int
	for i := 0; i < n; {
		e := i + 1
		for e < n && cpus[e] == cpus[e-1]+1 {
			e++
		}
		runs = append(runs, cpus[i:e])
		i = e
	}
	if slices.ContainsFunc(runs, func(run []int) bool { return len(run) < k }) {
		runs = [][]int{cpus}
	}
	var share []int
	for _, run := range runs {
		l := len(run)
		share = append(share, run[j*l/k:(j+1)*l/k]...)
	}
	return share
}

// line describes rank r for --report-bindings:
// rank 3 → host vm, GPU 2 (0000:52:00.0), NUMA node 0, CPUs 0-55,112-167.
func (p placement) line(r int, host string) string {
	pl := p.ranks[r]
	gpu := "GPU none"
	if pl.gpu >= 0 {
		gpu = fmt.Sprintf("GPU %d", pl.gpu)
		if pl.busID != "" {
			gpu += " (" + pl.busID + ")"
		}
	}
	numa := "NUMA node -"
	if pl.numa >= 0 {
		numa = fmt.Sprintf("NUMA node %d", pl.numa)
	}
	cpus := "CPUs not bound"
	if pl.cpus != nil {
		cpus = "CPUs " + string(topology.FormatCPUs(pl.cpus))
	}
	return fmt.Sprintf("rank %d → host %s, %s, %s, %s", r, host, gpu, numa, cpus)
}

// placeJob finds the topology (o.TopologyFile, else this machine's), reads a --gpu-order
// file and the launcher's CPUs, and places every rank (place). getenv is os.LookupEnv in
// production. Its errors are the user's to fix: nothing was started.
func placeJob(o Options, l rank.Layout, host string, getenv func(string) (string, bool)) (placement, error) {
	q := placeRequest{layout: l, bind: o.Bind, order: o.GPUOrder}
	if q.bind == "" {
		q.bind = BindNUMA
	}
	if q.order == "" {
		q.order = OrderAuto
	}
	if q.bind != BindNUMA && q.bind != BindCore && q.bind != BindNone {
		return placement{}, fmt.Errorf("--bind %q: expected numa, core or none", q.bind)
	}
	q.visible, q.visibleSet = getenv(envCUDAVisible)
	var notes []string
	if o.TopologyFile != "" {
		t, err := topology.Load(o.TopologyFile)
		if err != nil {
			return placement{}, fmt.Errorf("--topology-file %w", err)
		}
		q.machine = machineOf(t, host)
		if q.bind != BindNone {
			notes = append(notes, fmt.Sprintf("--topology-file %s: CPUs reported, not bound (the file's CPU numbers need not be this host's)", o.TopologyFile))
		}
	} else {
		t, err := topology.Discover()
		if err != nil { // a bug in discovery: run the job as before, unplaced
			notes = append(notes, fmt.Sprintf("%v: ranks placed on no GPU and not bound", err))
			q.bind = BindNone
		} else {
			q.machine = machineOf(t, host)
		}
		q.apply = q.bind != BindNone
	}
	if q.apply {
		cpus, err := threadCPUs()
		if err != nil {
			return placement{}, fmt.Errorf("--bind %s: cannot read the launcher's CPU affinity (%v): --bind none starts the ranks unbound", q.bind, err)
		}
		q.allowed = cpus
	}
	if q.order != OrderAuto && q.order != OrderIdentity {
		data, err := os.ReadFile(q.order)
		if err != nil {
			if pe := (*fs.PathError)(nil); errors.As(err, &pe) {
				err = pe.Err
			}
			return placement{}, fmt.Errorf("--gpu-order %s: %v (expected auto, identity or a JSON file)", q.order, err)
		}
		if q.file, err = parseGPUOrder(q.order, data); err != nil {
			return placement{}, err
		}
	}
	p, err := place(q)
	p.notes = append(notes, p.notes...)
	return p, err
}

// machineOf is the machine of the node named host, else of the first node: every rank
// runs on this host.
func machineOf(t *topology.Topology, host string) *topology.Machine {
	for n, node := range t.Nodes {
		if strings.EqualFold(node.Name, host) {
			return t.MachineOf(n)
		}
	}
	return t.MachineOf(0)
}
