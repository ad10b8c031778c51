package topology

import (
	"fmt"
	"slices"
)

// Topology describes one node or a cluster of nodes: each node is an instance of a machine
// (its GPUs, the class of every GPU pair, NUMA nodes, NICs), and nodes reach each other
// through their NICs over the network. Identical nodes share one machine, so a cluster of
// 64 DGX nodes describes the DGX once.
//
// GPUs are numbered across the cluster node by node: node 0's GPUs first, in their local
// order. A Topology that came from Load, Parse or Discover is valid (see Validate); one
// built by hand should be validated before its methods are used.
type Topology struct {
	Name        string              `json:"name,omitempty"`
	Description string              `json:"description,omitempty"`
	Machines    map[string]*Machine `json:"machines"`
	Nodes       []Node              `json:"nodes"`
	// Network joins the nodes; it is required when there is more than one.
	Network *Network `json:"network,omitempty"`
}

// Node is one host of the cluster.
type Node struct {
	Name    string `json:"name"`    // host name
	Machine string `json:"machine"` // key in Topology.Machines
}

// Machine is the layout of one kind of host.
type Machine struct {
	Description string     `json:"description,omitempty"`
	NUMA        []NUMANode `json:"numa"`
	GPUs        []GPU      `json:"gpus"`
	// Links[i][j] is the class of the path between GPU i and GPU j: X on the diagonal,
	// symmetric.
	Links [][]Class `json:"links"`
	NICs  []NIC     `json:"nics,omitempty"`
	// Notes say what discovery could not see and what it assumed instead.
	Notes []string `json:"notes,omitempty"`
}

// NUMANode is one NUMA node of a machine and its CPUs.
type NUMANode struct {
	ID   int     `json:"id"`
	CPUs CPUList `json:"cpus"`
}

// GPU is one GPU of a machine. Index is its position in the machine (nvidia-smi's index,
// which is PCI bus order).
type GPU struct {
	Index     int    `json:"index"`
	UUID      string `json:"uuid,omitempty"`
	Name      string `json:"name"`
	PCIBusID  string `json:"pci_bus_id,omitempty"` // sysfs form, 0000:1b:00.0
	MemoryMiB uint64 `json:"memory_mib,omitempty"`
	NUMANode  int    `json:"numa_node"` // the NUMA node nearest to the GPU
	// CPUs are the CPUs nearest to the GPU (its CPU affinity), where its rank should run.
	CPUs CPUList `json:"cpus"`
}

// NIC is one network interface of a machine.
type NIC struct {
	Name     string  `json:"name"`           // network device (ibp24s0), or the RDMA device when it has none
	RDMA     string  `json:"rdma,omitempty"` // RDMA device (mlx5_0), for InfiniBand and RoCE
	PCIBusID string  `json:"pci_bus_id,omitempty"`
	NUMANode int     `json:"numa_node"`
	Gbps     float64 `json:"gbps,omitempty"` // link speed; 0 when unknown (link down, virtual NIC)
	// GPUs[i] is the PCIe class of the path between this NIC and GPU i (PIX: under the same
	// PCIe switch, the GPU's GPUDirect RDMA NIC). Empty when unknown.
	GPUs []Class `json:"gpus,omitempty"`
}

// Network is what joins the nodes: every node reaches the others through its NICs.
type Network struct {
	Fabric      string `json:"fabric"` // "infiniband", "roce", "ethernet"
	Description string `json:"description,omitempty"`
}

// NumNodes is the number of nodes.
func (t *Topology) NumNodes() int { return len(t.Nodes) }

// MachineOf is the machine of node n.
func (t *Topology) MachineOf(n int) *Machine { return t.Machines[t.Nodes[n].Machine] }

// NumGPUs is the number of GPUs of the whole cluster.
func (t *Topology) NumGPUs() int {
	total := 0
	for n := range t.Nodes {
		total += len(t.MachineOf(n).GPUs)
	}
	return total
}

// Locate returns the node of global GPU i and its index within that node. It panics if i
// is out of range, as a slice index would.
func (t *Topology) Locate(i int) (node, local int) {
	if i >= 0 {
		for n := range t.Nodes {
			g := len(t.MachineOf(n).GPUs)
			if i < g {
				return n, i
			}
			i -= g
		}
	}
	panic(fmt.Sprintf("topology: GPU %d out of range [0, %d)", i, t.NumGPUs()))
}

// GPU is global GPU i (its Index is its index within its node).
func (t *Topology) GPU(i int) GPU {
	n, l := t.Locate(i)
	return t.MachineOf(n).GPUs[l]
}

// Link is the class of the path between global GPUs i and j: the machine's class within a
// node, NET between nodes.
func (t *Topology) Link(i, j int) Class {
	ni, li := t.Locate(i)
	nj, lj := t.Locate(j)
	if ni != nj {
		return ClassNET
	}
	return t.MachineOf(ni).Links[li][lj]
}

// MachineNames are the keys of Machines in the order their first node lists them, then any
// machine no node uses, by name.
func (t *Topology) MachineNames() []string {
	var names []string
	for _, n := range t.Nodes {
		if !slices.Contains(names, n.Machine) {
			names = append(names, n.Machine)
		}
	}
	var unused []string
	for name := range t.Machines {
		if !slices.Contains(names, name) {
			unused = append(unused, name)
		}
	}
	slices.Sort(unused)
	return append(names, unused...)
}

// NumGPUs is the number of GPUs of the machine.
func (m *Machine) NumGPUs() int { return len(m.GPUs) }

// Link is the class of the path between the machine's GPUs i and j.
func (m *Machine) Link(i, j int) Class { return m.Links[i][j] }

// NUMANodeByID returns the NUMA node with the given id.
func (m *Machine) NUMANodeByID(id int) (NUMANode, bool) {
	for _, n := range m.NUMA {
		if n.ID == id {
			return n, true
		}
	}
	return NUMANode{}, false
}
