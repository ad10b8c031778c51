package topology

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

var rewrite = flag.Bool("rewrite", false, "rewrite the shipped topologies and the golden files from the code")

// The shipped topologies are written by this code (go test ./topology -run TestShipped
// -rewrite) and checked against it, so that a hand edit of a file is caught and the
// description of a machine lives in one place. Bus ids and device names follow the
// machines' published layouts; they were not read from one.

// dgxH100 is a DGX H100: 8 × H100 SXM5 80GB on NVLink4 through NVSwitch (18 links from every
// GPU, so NV18 between every pair), 2 × 56-core Xeon 8480C with 2 threads a core (GPUs 0-3
// on NUMA node 0), and 8 × 400 Gb/s ConnectX-7 InfiniBand NICs, one under each GPU's PCIe
// switch (PIX to its GPU: GPUDirect RDMA).
func dgxH100() *Machine {
	numa := []NUMANode{{0, "0-55,112-167"}, {1, "56-111,168-223"}}
	gpuBus := []string{"1b", "43", "52", "61", "9d", "c3", "d1", "df"}
	nics := []struct{ name, rdma, bus string }{
		{"ibp24s0", "mlx5_0", "18"}, {"ibp64s0", "mlx5_3", "40"}, {"ibp79s0", "mlx5_4", "4f"}, {"ibp94s0", "mlx5_5", "5e"},
		{"ibp154s0", "mlx5_6", "9a"}, {"ibp192s0", "mlx5_9", "c0"}, {"ibp206s0", "mlx5_10", "ce"}, {"ibp220s0", "mlx5_11", "dc"},
	}
	socket := func(i int) int { return i / 4 }
	m := &Machine{
		Description: "DGX H100: 8 × H100 SXM5 80GB, NVLink4 through NVSwitch (NV18 every pair), 2 × 56-core CPUs " +
			"with 2 threads a core (GPUs 0-3 on NUMA node 0, 4-7 on node 1), 8 × 400 Gb/s InfiniBand NICs, " +
			"one under each GPU's PCIe switch",
		NUMA: numa,
	}
	for i, bus := range gpuBus {
		m.GPUs = append(m.GPUs, GPU{
			Index: i, Name: "NVIDIA H100 80GB HBM3", PCIBusID: "0000:" + bus + ":00.0", MemoryMiB: 81559,
			NUMANode: socket(i), CPUs: numa[socket(i)].CPUs,
		})
	}
	m.Links = matrix(8, func(i, j int) Class { return NV(18) })
	for k, n := range nics {
		nic := NIC{Name: n.name, RDMA: n.rdma, PCIBusID: "0000:" + n.bus + ":00.0", NUMANode: socket(k), Gbps: 400}
		for i := range 8 {
			nic.GPUs = append(nic.GPUs, pcieClass(i == k, socket(i) == socket(k)))
		}
		m.NICs = append(m.NICs, nic)
	}
	return m
}

// pcie8GPU is an 8-GPU PCIe server: 8 × H100 PCIe without NVLink bridges, in pairs under
// four PCIe switches, two switches per socket on their own host bridges; 2 × 32-core CPUs
// with 2 threads a core; one 200 Gb/s NIC under each switch.
func pcie8GPU() *Machine {
	numa := []NUMANode{{0, "0-31,64-95"}, {1, "32-63,96-127"}}
	gpuBus := []string{"1b", "1c", "3d", "3e", "9c", "9d", "bc", "bd"}
	nics := []struct{ name, rdma, bus string }{
		{"enp26s0np0", "mlx5_0", "1a"}, {"enp60s0np0", "mlx5_1", "3c"}, {"enp155s0np0", "mlx5_2", "9b"}, {"enp187s0np0", "mlx5_3", "bb"},
	}
	socket := func(i int) int { return i / 4 }
	pair := func(i int) int { return i / 2 }
	m := &Machine{
		Description: "8-GPU PCIe server: 8 × H100 PCIe, no NVLink, in pairs under four PCIe switches (PIX within a pair, " +
			"NODE between pairs of one socket, SYS across sockets), 2 × 32-core CPUs with 2 threads a core " +
			"(GPUs 0-3 on NUMA node 0), one 200 Gb/s NIC under each switch",
		NUMA: numa,
	}
	for i, bus := range gpuBus {
		m.GPUs = append(m.GPUs, GPU{
			Index: i, Name: "NVIDIA H100 PCIe", PCIBusID: "0000:" + bus + ":00.0", MemoryMiB: 81559,
			NUMANode: socket(i), CPUs: numa[socket(i)].CPUs,
		})
	}
	m.Links = matrix(8, func(i, j int) Class { return pcieClass(pair(i) == pair(j), socket(i) == socket(j)) })
	for k, n := range nics {
		nic := NIC{Name: n.name, RDMA: n.rdma, PCIBusID: "0000:" + n.bus + ":00.0", NUMANode: k / 2, Gbps: 200}
		for i := range 8 {
			nic.GPUs = append(nic.GPUs, pcieClass(pair(i) == k, socket(i) == k/2))
		}
		m.NICs = append(m.NICs, nic)
	}
	return m
}

// pcieClass: PIX under one switch, NODE on one socket, SYS across.
func pcieClass(sameSwitch, sameSocket bool) Class {
	switch {
	case sameSwitch:
		return ClassPIX
	case sameSocket:
		return ClassNODE
	default:
		return ClassSYS
	}
}

// matrix is an n×n link matrix with X on the diagonal and f elsewhere.
func matrix(n int, f func(i, j int) Class) [][]Class {
	m := make([][]Class, n)
	for i := range m {
		m[i] = make([]Class, n)
		for j := range m[i] {
			if i == j {
				m[i][j] = ClassSelf
			} else {
				m[i][j] = f(i, j)
			}
		}
	}
	return m
}

func single(name string, m *Machine) *Topology {
	return &Topology{Name: name, Machines: map[string]*Machine{name: m}, Nodes: []Node{{Name: name, Machine: name}}}
}

// dgxCluster is n DGX H100 nodes on a 400 Gb/s InfiniBand fabric.
func dgxCluster(n int) *Topology {
	t := &Topology{
		Name:        fmt.Sprintf("cluster-%dx-dgx-h100", n),
		Description: fmt.Sprintf("%d DGX H100 nodes (%d GPUs) joined by their 8 × 400 Gb/s InfiniBand NICs each", n, 8*n),
		Machines:    map[string]*Machine{"dgx-h100": dgxH100()},
		Network: &Network{
			Fabric:      "infiniband",
			Description: "NDR 400 Gb/s, rail-optimised non-blocking fat tree: NIC k of every node on leaf switch k",
		},
	}
	width := len(fmt.Sprint(n - 1))
	for i := range n {
		t.Nodes = append(t.Nodes, Node{Name: fmt.Sprintf("dgx-h100-%0*d", width, i), Machine: "dgx-h100"})
	}
	return t
}

func shippedTopologies() map[string]*Topology {
	return map[string]*Topology{
		"dgx-h100":             single("dgx-h100", dgxH100()),
		"pcie-8gpu":            single("pcie-8gpu", pcie8GPU()),
		"cluster-2x-dgx-h100":  dgxCluster(2),
		"cluster-64x-dgx-h100": dgxCluster(64),
	}
}

func TestShippedFiles(t *testing.T) {
	want := shippedTopologies()
	if *rewrite {
		old, _ := filepath.Glob("files/*.json")
		for _, f := range old {
			if err := os.Remove(f); err != nil {
				t.Fatal(err)
			}
		}
		for name, top := range want {
			if err := top.Save(filepath.Join("files", name+".json")); err != nil {
				t.Fatal(err)
			}
		}
		t.Skip("rewrote files/ (rebuild for the embedded copies)")
	}
	var names []string
	for name := range want {
		names = append(names, name)
	}
	if got := Shipped(); fmt.Sprint(got) != fmt.Sprint(sortedKeys(want)) {
		t.Errorf("Shipped() = %v, want %v", got, sortedKeys(want))
	}
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			b, err := want[name].JSON()
			if err != nil {
				t.Fatal(err)
			}
			file, err := os.ReadFile(filepath.Join("files", name+".json"))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(file, b) {
				t.Errorf("files/%s.json differs from the code that writes it; run go test ./topology -run TestShipped -rewrite", name)
			}
		})
	}
}
