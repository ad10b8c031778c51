package topology

import (
	"errors"
	"fmt"
	"math"
)

// Validate checks that t is whole and consistent, and returns the first problem in one line
// that says where it is: every node names a machine; every machine has NUMA nodes, GPUs
// indexed by position, a class for every GPU pair (X on the diagonal, symmetric, NET never
// within a node), CPU lists that parse, NUMA nodes that exist, NIC classes for every GPU
// or none; and a cluster of several nodes has a network and NICs with a speed.
func (t *Topology) Validate() error {
	if len(t.Nodes) == 0 {
		return errors.New("no nodes")
	}
	seen := map[string]int{}
	for i, n := range t.Nodes {
		if n.Name == "" {
			return fmt.Errorf("node %d: no name", i)
		}
		if j, dup := seen[n.Name]; dup {
			return fmt.Errorf("nodes %d and %d are both named %q", j, i, n.Name)
		}
		seen[n.Name] = i
		if _, ok := t.Machines[n.Machine]; !ok {
			return fmt.Errorf("node %q: machine %q is not in machines", n.Name, n.Machine)
		}
	}
	for _, name := range t.MachineNames() {
		m := t.Machines[name]
		if m == nil {
			return fmt.Errorf("machine %q: empty", name)
		}
		if err := m.Validate(); err != nil {
			return fmt.Errorf("machine %q: %w", name, err)
		}
	}
	if len(t.Nodes) > 1 {
		if t.Network == nil {
			return fmt.Errorf("%d nodes but no network joins them", len(t.Nodes))
		}
		if t.Network.Fabric == "" {
			return errors.New("network: no fabric")
		}
		for _, n := range t.Nodes {
			if !hasSpeed(t.Machines[n.Machine].NICs) {
				return fmt.Errorf("node %q: machine %q has no NIC with a speed to reach the other nodes", n.Name, n.Machine)
			}
		}
	}
	return nil
}

func hasSpeed(nics []NIC) bool {
	for _, n := range nics {
		if n.Gbps > 0 {
			return true
		}
	}
	return false
}

// Validate checks one machine (see Topology.Validate); errors do not name the machine.
func (m *Machine) Validate() error {
	if len(m.NUMA) == 0 {
		return errors.New("no NUMA nodes")
	}
	ids := map[int]bool{}
	for _, n := range m.NUMA {
		if n.ID < 0 || ids[n.ID] {
			return fmt.Errorf("NUMA node %d: negative or listed twice", n.ID)
		}
		ids[n.ID] = true
		if _, err := n.CPUs.CPUs(); err != nil {
			return fmt.Errorf("NUMA node %d: cpus %q: %w", n.ID, n.CPUs, err)
		}
	}
	numa := func(id int) error {
		if !ids[id] {
			return fmt.Errorf("NUMA node %d is not in numa", id)
		}
		return nil
	}
	n := len(m.GPUs)
	for i, g := range m.GPUs {
		if g.Index != i {
			return fmt.Errorf("GPU at position %d has index %d", i, g.Index)
		}
		if g.Name == "" {
			return fmt.Errorf("GPU%d: no name", i)
		}
		if err := numa(g.NUMANode); err != nil {
			return fmt.Errorf("GPU%d: %w", i, err)
		}
		if _, err := g.CPUs.CPUs(); err != nil {
			return fmt.Errorf("GPU%d: cpus %q: %w", i, g.CPUs, err)
		}
	}
	if len(m.Links) != n {
		return fmt.Errorf("links: %d rows for %d GPUs", len(m.Links), n)
	}
	for i, row := range m.Links {
		if len(row) != n {
			return fmt.Errorf("links: row GPU%d has %d classes for %d GPUs", i, len(row), n)
		}
	}
	for i := range n {
		for j := range n {
			c := m.Links[i][j]
			switch {
			case i == j && c != ClassSelf:
				return fmt.Errorf("links: GPU%d-GPU%d is %s, want X", i, j, show(c))
			case i == j:
			case c.Kind == KindUnknown:
				return fmt.Errorf("links: GPU%d-GPU%d has no class", i, j)
			case c.Kind == Self:
				return fmt.Errorf("links: GPU%d-GPU%d is X, which only a GPU is to itself", i, j)
			case c.Kind == NET:
				return fmt.Errorf("links: GPU%d-GPU%d is NET, which is for GPUs of different nodes", i, j)
			case c.Kind > NET:
				return fmt.Errorf("links: GPU%d-GPU%d: unknown kind %d", i, j, c.Kind)
			case c.Kind != NVLink && c.Links != 0:
				return fmt.Errorf("links: GPU%d-GPU%d: %s has no link count", i, j, c)
			case c.Links < 0:
				return fmt.Errorf("links: GPU%d-GPU%d: negative link count", i, j)
			}
		}
	}
	for i := range n {
		for j := i + 1; j < n; j++ {
			if c, d := m.Links[i][j], m.Links[j][i]; c != d {
				return fmt.Errorf("links: GPU%d-GPU%d is %s but GPU%d-GPU%d is %s", i, j, c, j, i, d)
			}
		}
	}
	for k, nic := range m.NICs {
		if nic.Name == "" {
			return fmt.Errorf("NIC %d: no name", k)
		}
		if err := numa(nic.NUMANode); err != nil {
			return fmt.Errorf("NIC %s: %w", nic.Name, err)
		}
		if nic.Gbps < 0 || math.IsNaN(nic.Gbps) || math.IsInf(nic.Gbps, 0) {
			return fmt.Errorf("NIC %s: gbps %v", nic.Name, nic.Gbps)
		}
		if len(nic.GPUs) != 0 && len(nic.GPUs) != n {
			return fmt.Errorf("NIC %s: %d GPU classes for %d GPUs", nic.Name, len(nic.GPUs), n)
		}
		for i, c := range nic.GPUs {
			if c.Kind < PIX || c.Kind > SYS {
				return fmt.Errorf("NIC %s: GPU%d is %s; a NIC reaches a GPU through PCIe (PIX, PXB, PHB, NODE or SYS)", nic.Name, i, show(c))
			}
		}
	}
	return nil
}

// show names a class in an error, the zero Class included.
func show(c Class) string {
	if c.Kind == KindUnknown {
		return "missing"
	}
	return c.String()
}
