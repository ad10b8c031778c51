package launch

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/moerun/moerun/rank"
	"github.com/moerun/moerun/topology"
)

func shippedMachine(t *testing.T, name string) *topology.Machine {
	t.Helper()
	topo, err := topology.Load(name)
	if err != nil {
		t.Fatal(err)
	}
	return topo.MachineOf(0)
}

// splitPairs is pcie-8gpu with its GPUs numbered across the switches: the pairs under one
// PCIe switch are GPUs (0,4), (1,5), (2,6), (3,7), so consecutive ranks (a TP group of
// identity order) never share a switch. GPUs 0, 4, 1, 5 are on NUMA node 0.
func splitPairs(t *testing.T) *topology.Machine {
	t.Helper()
	pcie := shippedMachine(t, "pcie-8gpu")
	m := &topology.Machine{NUMA: pcie.NUMA}
	sw := func(g int) int { return g % 4 } // the PCIe switch of GPU g; switches 0, 1 on socket 0
	for g := range 8 {
		node := sw(g) / 2
		m.GPUs = append(m.GPUs, topology.GPU{Index: g, Name: "G", NUMANode: node, CPUs: pcie.NUMA[node].CPUs})
	}
	for a := range 8 {
		var row []topology.Class
		for b := range 8 {
			switch {
			case a == b:
				row = append(row, topology.ClassSelf)
			case sw(a) == sw(b):
				row = append(row, topology.ClassPIX)
			case sw(a)/2 == sw(b)/2:
				row = append(row, topology.ClassNODE)
			default:
				row = append(row, topology.ClassSYS)
			}
		}
		m.Links = append(m.Links, row)
	}
	if err := m.Validate(); err != nil {
		t.Fatal(err)
	}
	return m
}

func layout(t *testing.T, np, tp int) rank.Layout {
	t.Helper()
	l, err := rank.NewLayout(np, tp, 1, 1, 0, false)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// worstTP is the worst link inside any TP group when rank r is on order[r mod len].
func worstTP(m *topology.Machine, l rank.Layout, order []int) topology.Class {
	var worst topology.Class
	for _, g := range l.Groups(rank.TP) {
		var set []int
		for _, r := range g {
			set = append(set, order[r%len(order)])
		}
		for i, a := range set {
			for _, b := range set[i+1:] {
				if c := m.Link(a, b); worst.Kind == topology.KindUnknown || linkCost(c) > linkCost(worst) {
					worst = c
				}
			}
		}
	}
	return worst
}

func TestGPUOrder(t *testing.T) {
	dgx := shippedMachine(t, "dgx-h100")
	pcie := shippedMachine(t, "pcie-8gpu")
	split := splitPairs(t)
	all := []int{0, 1, 2, 3, 4, 5, 6, 7}
	cases := []struct {
		name     string
		m        *topology.Machine
		gpus     []int
		np, tp   int
		mode     string
		want     []int
		worst    string // the worst TP link of the order
		identity string // … and of identity's, where auto must beat it
	}{
		// Where identity is best, auto is identity.
		{"dgx tp8", dgx, all, 8, 8, OrderAuto, all, "NV18", ""},
		{"dgx tp2", dgx, all, 8, 2, OrderAuto, all, "NV18", ""},
		{"pcie tp2: PIX pairs", pcie, all, 8, 2, OrderAuto, all, "PIX", ""},
		{"pcie tp4: a socket each", pcie, all, 8, 4, OrderAuto, all, "NODE", ""},
		{"pcie tp1", pcie, all, 8, 1, OrderAuto, all, "", ""},
		{"pcie np4 tp2", pcie, all, 4, 2, OrderAuto, []int{0, 1, 2, 3}, "PIX", ""},
		// Where it is not, auto regroups.
		{"split tp2: pairs under a switch", split, all, 8, 2, OrderAuto, []int{0, 4, 1, 5, 2, 6, 3, 7}, "PIX", "NODE"},
		{"split tp4: a socket each", split, all, 8, 4, OrderAuto, []int{0, 1, 4, 5, 2, 3, 6, 7}, "NODE", "SYS"},
		{"split np4 tp2", split, all, 4, 2, OrderAuto, []int{0, 4, 1, 5}, "PIX", "NODE"},
		{"split np2 tp2", split, all, 2, 2, OrderAuto, []int{0, 4}, "PIX", "NODE"},
		{"pcie tp3: no group across sockets", pcie, all, 6, 3, OrderAuto, []int{0, 1, 2, 4, 5, 6}, "NODE", "SYS"},
		// More ranks than GPUs: they share them, rank r on order[r mod 8].
		{"split np16 tp2", split, all, 16, 2, OrderAuto, []int{0, 4, 1, 5, 2, 6, 3, 7}, "PIX", "NODE"},
		{"split identity", split, all, 8, 2, OrderIdentity, all, "NODE", ""},
		// CUDA_VISIBLE_DEVICES=6,7,2,3: the job has those GPUs only.
		{"split visible identity", split, []int{6, 7, 2, 3}, 4, 2, OrderIdentity, []int{6, 7, 2, 3}, "NODE", ""},
		{"split visible auto", split, []int{6, 7, 2, 3}, 4, 2, OrderAuto, []int{2, 6, 3, 7}, "PIX", "NODE"},
		{"file", split, all, 4, 2, "order.json", []int{7, 3, 0, 4}, "PIX", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			l := layout(t, tc.np, tc.tp)
			var file []int
			if tc.mode != OrderAuto && tc.mode != OrderIdentity {
				file = tc.want
			}
			got, err := gpuOrder(tc.m, tc.gpus, l, tc.mode, file)
			if err != nil || !slices.Equal(got, tc.want) {
				t.Fatalf("gpuOrder = %v, %v; want %v", got, err, tc.want)
			}
			if w := worstTP(tc.m, l, got).String(); w != tc.worst {
				t.Errorf("worst TP link %q, want %q", w, tc.worst)
			}
			if tc.identity != "" {
				id := tc.gpus[:min(tc.np, len(tc.gpus))]
				if w := worstTP(tc.m, l, id).String(); w != tc.identity {
					t.Errorf("identity's worst TP link %q, want %q", w, tc.identity)
				}
			}
		})
	}
}

// TestBestSetLarge covers the greedy search of nodes too large to search exhaustively:
// 24 GPUs in three NVLink islands of 8 (GPU g in island g mod 3), SYS between them.
func TestBestSetLarge(t *testing.T) {
	const n = 24
	m := &topology.Machine{}
	for a := range n {
		row := make([]topology.Class, n)
		for b := range n {
			switch {
			case a == b:
				row[b] = topology.ClassSelf
			case a%3 == b%3:
				row[b] = topology.NV(12)
			default:
				row[b] = topology.ClassSYS
			}
		}
		m.Links = append(m.Links, row)
	}
	if fewCombinations(n, 8) {
		t.Fatalf("C(%d, 8) searched exhaustively", n)
	}
	var all []int
	for g := range n {
		all = append(all, g)
	}
	var tp [][]int
	for g := range 3 {
		tp = append(tp, []int{8 * g, 8*g + 1, 8*g + 2, 8*g + 3, 8*g + 4, 8*g + 5, 8*g + 6, 8*g + 7})
	}
	got := autoOrder(m, all, tp, n)
	want := []int{0, 3, 6, 9, 12, 15, 18, 21, 1, 4, 7, 10, 13, 16, 19, 22, 2, 5, 8, 11, 14, 17, 20, 23}
	if !slices.Equal(got, want) {
		t.Errorf("autoOrder = %v, want %v", got, want)
	}
}

func TestFewCombinations(t *testing.T) {
	for _, tc := range []struct {
		n, k int
		want bool
	}{{8, 4, true}, {16, 8, true}, {17, 8, true}, {18, 9, true}, {19, 9, false}, {24, 8, false}, {100, 1, true}, {100, 99, true}, {100, 3, false}} {
		if got := fewCombinations(tc.n, tc.k); got != tc.want {
			t.Errorf("fewCombinations(%d, %d) = %v", tc.n, tc.k, got)
		}
	}
}

func TestJobGPUs(t *testing.T) {
	m := shippedMachine(t, "pcie-8gpu")
	m.GPUs[5].UUID = "GPU-5e"
	cases := []struct {
		visible string
		set     bool
		want    []int
		ok      bool
	}{
		{"", false, []int{0, 1, 2, 3, 4, 5, 6, 7}, true},
		{"4,5,6,7", true, []int{4, 5, 6, 7}, true},
		{"7, 2", true, []int{7, 2}, true},
		{"GPU-5e,0", true, []int{5, 0}, true},
		{"", true, nil, false},
		{"-1", true, nil, false},
		{"8", true, nil, false},
		{"1,1", true, nil, false},
		{"1,GPU-5e,5", true, nil, false},
		{"MIG-0123", true, nil, false},
		{"+1", true, nil, false},
	}
	for _, tc := range cases {
		got, ok := jobGPUs(m, tc.visible, tc.set)
		if ok != tc.ok || !slices.Equal(got, tc.want) {
			t.Errorf("jobGPUs(%q, set %v) = %v, %v; want %v, %v", tc.visible, tc.set, got, ok, tc.want, tc.ok)
		}
	}
}

// TestGPUOrderFile covers --gpu-order FILE: each fault in one line that names the file.
func TestGPUOrderFile(t *testing.T) {
	pcie := shippedMachine(t, "pcie-8gpu")
	all := []int{0, 1, 2, 3, 4, 5, 6, 7}
	cases := []struct {
		data string
		np   int
		gpus []int
		want string // the error; "" for none
	}{
		{"[0, 4, 1, 5]", 4, all, ""},
		{"[0,4,1,5,2,6,3,7]\n", 8, all, ""},
		{"[0, 4, 1]", 4, all, "--gpu-order o.json: 3 GPUs for 4 ranks (one per rank)"},
		{"[0, 4, 1, 4]", 4, all, "--gpu-order o.json: GPU 4 is given to rank 1 and rank 3"},
		{"[0, 4, 1, 8]", 4, all, "--gpu-order o.json: rank 3: GPU 8 is not one of the job's GPUs (0,1,2,3,4,5,6,7)"},
		{"[0, 1]", 2, []int{4, 5}, "--gpu-order o.json: rank 0: GPU 0 is not one of the job's GPUs (4,5)"},
		{"[0,1,2,3,4,5,6,7]", 16, all, "--gpu-order o.json: 16 ranks for 8 GPUs: a file gives every rank a GPU of its own"},
		{`{"order": [0, 1]}`, 2, all, "--gpu-order o.json: expected a JSON list of GPU indices, one per rank, such as [0, 4, 1, 5]: json: cannot unmarshal"},
		{"[0, 1.5]", 2, all, "--gpu-order o.json: expected a JSON list of GPU indices, one per rank, such as [0, 4, 1, 5]: json: cannot unmarshal number 1.5"},
		{"[0, 1] [2]", 2, all, "--gpu-order o.json: expected a JSON list of GPU indices, one per rank, such as [0, 4, 1, 5]: data after the list"},
		{"null", 2, all, "--gpu-order o.json: expected a JSON list of GPU indices, one per rank, such as [0, 4, 1, 5]: null"},
		{"", 2, all, "--gpu-order o.json: expected a JSON list of GPU indices, one per rank, such as [0, 4, 1, 5]: EOF"},
	}
	for _, tc := range cases {
		t.Run(tc.data, func(t *testing.T) {
			list, err := parseGPUOrder("o.json", []byte(tc.data))
			if err == nil {
				_, err = gpuOrder(pcie, tc.gpus, layout(t, tc.np, 1), "o.json", list)
			}
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("error %v", err)
			case tc.want != "" && (err == nil || !strings.HasPrefix(err.Error(), tc.want) || strings.Contains(err.Error(), "\n")):
				t.Errorf("error %v, want one line starting %q", err, tc.want)
			}
		})
	}
}

func TestCPUShare(t *testing.T) {
	cases := []struct {
		cpus string
		k    int
		want []string
	}{
		{"0-55,112-167", 4, []string{"0-13,112-125", "14-27,126-139", "28-41,140-153", "42-55,154-167"}},
		{"0-55,112-167", 1, []string{"0-55,112-167"}},
		{"0-1", 2, []string{"0", "1"}},
		{"0-1", 3, []string{"0", "1", "0"}},
		{"0", 2, []string{"0", "0"}},
		{"0-9", 3, []string{"0-2", "3-5", "6-9"}},
		{"0,2,4,6", 2, []string{"0,2", "4,6"}},         // runs shorter than k: the list is split
		{"0-3,8,10-13", 2, []string{"0-3", "8,10-13"}}, // a run of one among longer ones
	}
	for _, tc := range cases {
		cpus, err := topology.CPUList(tc.cpus).CPUs()
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for j := range tc.k {
			got = append(got, string(topology.FormatCPUs(cpuShare(cpus, tc.k, j))))
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("cpuShare(%s, %d) = %q, want %q", tc.cpus, tc.k, got, tc.want)
		}
	}
}

// TestPlace covers the CPUs each rank gets (numa, core, none), clamped to the launcher's,
// and the lines --report-bindings prints.
func TestPlace(t *testing.T) {
	dgx := shippedMachine(t, "dgx-h100")
	pcie := shippedMachine(t, "pcie-8gpu")
	here := &topology.Machine{NUMA: []topology.NUMANode{{ID: 0, CPUs: "0-1"}}}
	twoNodes := &topology.Machine{NUMA: []topology.NUMANode{{ID: 0, CPUs: "0-3"}, {ID: 1, CPUs: "4-7"}, {ID: 2}}}
	cpus := func(s string) []int {
		c, err := topology.CPUList(s).CPUs()
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	cases := []struct {
		name    string
		m       *topology.Machine
		np, tp  int
		bind    string
		allowed string // the launcher's CPUs; "" when only reported (a topology file)
		want    []string
		visible string
	}{
		{"dgx numa", dgx, 8, 8, BindNUMA, "", []string{
			"rank 0 → host h, GPU 0 (0000:1b:00.0), NUMA node 0, CPUs 0-55,112-167",
			"rank 3 → host h, GPU 3 (0000:61:00.0), NUMA node 0, CPUs 0-55,112-167",
			"rank 4 → host h, GPU 4 (0000:9d:00.0), NUMA node 1, CPUs 56-111,168-223",
			"rank 7 → host h, GPU 7 (0000:df:00.0), NUMA node 1, CPUs 56-111,168-223",
		}, "0,1,2,3,4,5,6,7"},
		{"dgx core", dgx, 8, 8, BindCore, "", []string{
			"rank 0 → host h, GPU 0 (0000:1b:00.0), NUMA node 0, CPUs 0-13,112-125",
			"rank 1 → host h, GPU 1 (0000:43:00.0), NUMA node 0, CPUs 14-27,126-139",
			"rank 3 → host h, GPU 3 (0000:61:00.0), NUMA node 0, CPUs 42-55,154-167",
			"rank 4 → host h, GPU 4 (0000:9d:00.0), NUMA node 1, CPUs 56-69,168-181",
			"rank 7 → host h, GPU 7 (0000:df:00.0), NUMA node 1, CPUs 98-111,210-223",
		}, "0,1,2,3,4,5,6,7"},
		{"dgx none", dgx, 8, 8, BindNone, "", []string{
			"rank 0 → host h, GPU 0 (0000:1b:00.0), NUMA node 0, CPUs not bound",
			"rank 7 → host h, GPU 7 (0000:df:00.0), NUMA node 1, CPUs not bound",
		}, "0,1,2,3,4,5,6,7"},
		// 16 ranks on 8 GPUs: two a GPU, sharing its node's CPUs with the node's other 6.
		{"pcie core np16", pcie, 16, 2, BindCore, "", []string{
			"rank 0 → host h, GPU 0 (0000:1b:00.0), NUMA node 0, CPUs 0-3,64-67",
			"rank 8 → host h, GPU 0 (0000:1b:00.0), NUMA node 0, CPUs 16-19,80-83",
			"rank 15 → host h, GPU 7 (0000:bd:00.0), NUMA node 1, CPUs 60-63,124-127",
		}, "0,1,2,3,4,5,6,7"},
		{"pcie numa np4", pcie, 4, 2, BindNUMA, "", []string{
			"rank 3 → host h, GPU 3 (0000:3e:00.0), NUMA node 0, CPUs 0-31,64-95",
		}, "0,1,2,3"},
		// Clamped to the launcher's CPUs (taskset -c 0-3,60-61).
		{"dgx numa clamped", dgx, 8, 8, BindNUMA, "0-3,60-61", []string{
			"rank 0 → host h, GPU 0 (0000:1b:00.0), NUMA node 0, CPUs 0-3",
			"rank 4 → host h, GPU 4 (0000:9d:00.0), NUMA node 1, CPUs 60-61",
		}, "0,1,2,3,4,5,6,7"},
		{"dgx core clamped", dgx, 8, 8, BindCore, "0-3,60-61", []string{
			"rank 0 → host h, GPU 0 (0000:1b:00.0), NUMA node 0, CPUs 0",
			"rank 3 → host h, GPU 3 (0000:61:00.0), NUMA node 0, CPUs 3",
			"rank 4 → host h, GPU 4 (0000:9d:00.0), NUMA node 1, CPUs 60",
			"rank 5 → host h, GPU 5 (0000:c3:00.0), NUMA node 1, CPUs 61",
			"rank 6 → host h, GPU 6 (0000:d1:00.0), NUMA node 1, CPUs 60",
		}, "0,1,2,3,4,5,6,7"},
		// CPU workers: NUMA nodes with CPUs in turn.
		{"here core", here, 2, 1, BindCore, "0-1", []string{
			"rank 0 → host h, GPU none, NUMA node 0, CPUs 0",
			"rank 1 → host h, GPU none, NUMA node 0, CPUs 1",
		}, ""},
		{"here numa", here, 3, 1, BindNUMA, "0-1", []string{
			"rank 2 → host h, GPU none, NUMA node 0, CPUs 0-1",
		}, ""},
		{"here none", here, 2, 1, BindNone, "", []string{
			"rank 1 → host h, GPU none, NUMA node -, CPUs not bound",
		}, ""},
		{"two nodes numa", twoNodes, 4, 1, BindNUMA, "0-7", []string{
			"rank 0 → host h, GPU none, NUMA node 0, CPUs 0-3",
			"rank 1 → host h, GPU none, NUMA node 1, CPUs 4-7",
			"rank 2 → host h, GPU none, NUMA node 0, CPUs 0-3",
		}, ""},
		{"two nodes core", twoNodes, 4, 1, BindCore, "0-7", []string{
			"rank 0 → host h, GPU none, NUMA node 0, CPUs 0-1",
			"rank 1 → host h, GPU none, NUMA node 1, CPUs 4-5",
			"rank 2 → host h, GPU none, NUMA node 0, CPUs 2-3",
			"rank 3 → host h, GPU none, NUMA node 1, CPUs 6-7",
		}, ""},
		{"unknown machine", nil, 2, 1, BindCore, "0-1", []string{
			"rank 0 → host h, GPU none, NUMA node -, CPUs 0",
			"rank 1 → host h, GPU none, NUMA node -, CPUs 1",
		}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			q := placeRequest{machine: tc.m, layout: layout(t, tc.np, tc.tp), bind: tc.bind, order: OrderAuto}
			if tc.allowed != "" {
				q.allowed, q.apply = cpus(tc.allowed), true
			}
			p, err := place(q)
			if err != nil {
				t.Fatal(err)
			}
			if p.visible != tc.visible || p.apply != q.apply || len(p.ranks) != tc.np {
				t.Errorf("visible %q, apply %v, %d ranks; want %q, %v, %d", p.visible, p.apply, len(p.ranks), tc.visible, q.apply, tc.np)
			}
			for _, want := range tc.want {
				var r int
				fmt.Sscanf(want, "rank %d", &r)
				if got := p.line(r, "h"); got != want {
					t.Errorf("got  %s\nwant %s", got, want)
				}
			}
		})
	}
}

func TestPlaceErrors(t *testing.T) {
	dgx := shippedMachine(t, "dgx-h100")
	here := &topology.Machine{NUMA: []topology.NUMANode{{ID: 0, CPUs: "0-1"}}}
	cases := []struct {
		name string
		q    placeRequest
		want string
	}{
		{"no CPU of GPU 4's node", placeRequest{machine: dgx, layout: layout(t, 8, 1), bind: BindNUMA, order: OrderAuto, allowed: []int{0, 1, 2, 3}, apply: true},
			"rank 4: GPU 4's NUMA node 1 has CPUs 56-111,168-223, none of which launch may run on here (0-3): --bind none starts the ranks unbound"},
		{"no CPU of its node", placeRequest{machine: here, layout: layout(t, 1, 1), bind: BindCore, order: OrderAuto, allowed: []int{4}, apply: true},
			"rank 0: its NUMA node 0 has CPUs 0-1, none of which launch may run on here (4): --bind none starts the ranks unbound"},
		{"a file without GPUs", placeRequest{machine: here, layout: layout(t, 1, 1), bind: BindNone, order: "o.json", file: []int{0}},
			"--gpu-order o.json: no GPU to place the ranks on"},
	}
	for _, tc := range cases {
		if _, err := place(tc.q); err == nil || err.Error() != tc.want {
			t.Errorf("%s: error %v\nwant %s", tc.name, err, tc.want)
		}
	}
	// --bind none never fails on CPUs.
	q := cases[0].q
	q.bind = BindNone
	if _, err := place(q); err != nil {
		t.Errorf("--bind none: %v", err)
	}
}

// TestPlaceVisible: a CUDA_VISIBLE_DEVICES already set restricts the job to its GPUs, or,
// when it names none of the machine's, is left alone with a note.
func TestPlaceVisible(t *testing.T) {
	pcie := shippedMachine(t, "pcie-8gpu")
	q := placeRequest{machine: pcie, layout: layout(t, 4, 2), bind: BindNUMA, order: OrderAuto, visible: "4,5,6,7", visibleSet: true}
	p, err := place(q)
	if err != nil || p.visible != "4,5,6,7" || p.line(0, "h") != "rank 0 → host h, GPU 4 (0000:9c:00.0), NUMA node 1, CPUs 32-63,96-127" || len(p.notes) > 0 {
		t.Errorf("place = %q %q %q, %v", p.visible, p.line(0, "h"), p.notes, err)
	}
	q.visible = "MIG-1"
	p, err = place(q)
	if err != nil || p.visible != "" || p.line(1, "h") != "rank 1 → host h, GPU none, NUMA node 1, CPUs 32-63,96-127" ||
		!slices.Equal(p.notes, []string{`CUDA_VISIBLE_DEVICES="MIG-1" names no GPU of this machine by index or UUID: left as it is, and no rank is placed on a GPU`}) {
		t.Errorf("place = %q %q %q, %v", p.visible, p.line(1, "h"), p.notes, err)
	}
}

// TestPlaceJob covers the I/O around place: the topology file, the order file, the
// launcher's own CPUs.
func TestPlaceJob(t *testing.T) {
	dir := t.TempDir()
	order := filepath.Join(dir, "order.json")
	if err := os.WriteFile(order, []byte("[7, 6]"), 0o666); err != nil {
		t.Fatal(err)
	}
	noEnv := func(string) (string, bool) { return "", false }
	l := layout(t, 2, 2)

	p, err := placeJob(Options{TopologyFile: "pcie-8gpu", GPUOrder: order}, l, "h", noEnv)
	if err != nil || p.apply || p.visible != "7,6" ||
		!slices.Equal(p.notes, []string{"--topology-file pcie-8gpu: CPUs reported, not bound (the file's CPU numbers need not be this host's)"}) {
		t.Errorf("placeJob with files = %+v, %v", p, err)
	}
	p, err = placeJob(Options{TopologyFile: "pcie-8gpu", Bind: BindNone}, l, "h", noEnv)
	if err != nil || p.apply || p.visible != "0,1" || len(p.notes) > 0 {
		t.Errorf("placeJob --bind none = %+v, %v", p, err)
	}
	for _, tc := range []struct {
		o    Options
		want string
	}{
		{Options{TopologyFile: "pcie-8gpu", GPUOrder: filepath.Join(dir, "none.json")}, "--gpu-order " + dir + "/none.json: no such file or directory (expected auto, identity or a JSON file)"},
		{Options{TopologyFile: "pcie-8gpu", GPUOrder: "idendity"}, "--gpu-order idendity: no such file or directory (expected auto, identity or a JSON file)"},
		{Options{TopologyFile: "dgx-a100"}, "--topology-file dgx-a100: no such file, and no shipped topology of that name"},
		{Options{Bind: "socket"}, `--bind "socket": expected numa, core or none`},
	} {
		if _, err := placeJob(tc.o, l, "h", noEnv); err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("placeJob(%+v): error %v, want %q…", tc.o, err, tc.want)
		}
	}

	// This machine: the CPUs are bound, and clamped to the launcher's.
	own, err := threadCPUs()
	if err != nil {
		t.Fatal(err)
	}
	p, err = placeJob(Options{Bind: BindNUMA}, l, "h", noEnv)
	if err != nil || !p.apply {
		t.Fatalf("placeJob here = %+v, %v", p, err)
	}
	for r, pl := range p.ranks {
		if len(pl.cpus) == 0 || slices.ContainsFunc(pl.cpus, func(c int) bool { return !slices.Contains(own, c) }) {
			t.Errorf("rank %d: CPUs %v, not a subset of the launcher's %v", r, pl.cpus, own)
		}
	}
}
