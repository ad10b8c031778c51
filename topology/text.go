package topology

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
)

// WriteText prints t for people, machine by machine, as `nvidia-smi topo -m` does: the
// class of every GPU pair (X on the diagonal) and of every GPU–NIC pair, each GPU's CPU
// and NUMA affinity; then the GPUs, NUMA nodes, NICs and the machine's notes (what
// discovery could not see), the network between nodes, and the legend. A machine that
// several nodes share is printed once.
func (t *Topology) WriteText(w io.Writer) error {
	p := &printer{w: w}
	nodes := "1 node"
	if len(t.Nodes) != 1 {
		nodes = fmt.Sprintf("%d nodes", len(t.Nodes))
	}
	title := t.Name
	if title == "" {
		title = "topology"
	}
	p.printf("%s: %s, %d GPUs\n", title, nodes, t.NumGPUs())
	if t.Description != "" {
		p.printf("%s\n", t.Description)
	}
	for _, name := range t.MachineNames() {
		var on []string
		for _, n := range t.Nodes {
			if n.Machine == name {
				on = append(on, n.Name)
			}
		}
		if len(on) == 0 {
			continue // described but not used
		}
		m := t.Machines[name]
		p.printf("\n")
		switch {
		case len(on) == 1 && on[0] == name:
			p.printf("Node %s:\n", name)
		case len(on) == 1:
			p.printf("Node %s (machine %s):\n", on[0], name)
		default:
			p.printf("%d nodes %s (machine %s):\n", len(on), nodeRange(on), name)
		}
		if m.Description != "" {
			p.printf("%s\n", m.Description)
		}
		p.machine(m)
	}
	if t.Network != nil {
		p.printf("\nBetween nodes: NET over %s", t.Network.Fabric)
		if t.Network.Description != "" {
			p.printf(": %s", t.Network.Description)
		}
		p.printf("\n")
	}
	if t.NumGPUs() > 0 {
		p.printf("\nLegend:\n\n%s", Legend)
	}
	return p.err
}

type printer struct {
	w   io.Writer
	err error
}

func (p *printer) printf(format string, args ...any) {
	if p.err == nil {
		_, p.err = fmt.Fprintf(p.w, format, args...)
	}
}

// nodeRange names a list of nodes briefly: all of them when few, else the first two and
// the last.
func nodeRange(names []string) string {
	if len(names) <= 4 {
		return strings.Join(names, ", ")
	}
	return names[0] + ", " + names[1] + ", ..., " + names[len(names)-1]
}

func (p *printer) machine(m *Machine) {
	for _, note := range m.Notes {
		p.printf("%s\n", note)
	}
	if len(m.GPUs) == 0 {
		if len(m.Notes) == 0 {
			p.printf("no GPUs\n")
		}
	} else {
		p.printf("\n")
		tw := tabwriter.NewWriter(p.w, 0, 8, 2, ' ', 0)
		var head []string
		for i := range m.GPUs {
			head = append(head, "GPU"+strconv.Itoa(i))
		}
		for k := range m.NICs {
			head = append(head, "NIC"+strconv.Itoa(k))
		}
		head = append(head, "CPU Affinity", "NUMA Affinity")
		fmt.Fprintf(tw, "\t%s\n", strings.Join(head, "\t"))
		for i, g := range m.GPUs {
			row := []string{"GPU" + strconv.Itoa(i)}
			for j := range m.GPUs {
				row = append(row, m.Links[i][j].String())
			}
			for _, nic := range m.NICs {
				row = append(row, nicClass(nic, i))
			}
			row = append(row, orNA(string(g.CPUs)), strconv.Itoa(g.NUMANode))
			fmt.Fprintf(tw, "%s\n", strings.Join(row, "\t"))
		}
		if err := tw.Flush(); err != nil && p.err == nil {
			p.err = err
		}
		p.printf("\n")
		for i, g := range m.GPUs {
			p.printf("GPU%d: %s", i, g.Name)
			if g.MemoryMiB > 0 {
				p.printf(", %d MiB", g.MemoryMiB)
			}
			if g.PCIBusID != "" {
				p.printf(", %s", g.PCIBusID)
			}
			if g.UUID != "" {
				p.printf(", %s", g.UUID)
			}
			p.printf("\n")
		}
	}
	p.printf("\n")
	for _, n := range m.NUMA {
		p.printf("NUMA node %d: CPUs %s\n", n.ID, orNA(string(n.CPUs)))
	}
	if len(m.NICs) > 0 {
		p.printf("\n")
	}
	for k, nic := range m.NICs {
		p.printf("NIC%d: %s", k, nic.Name)
		if nic.RDMA != "" && nic.RDMA != nic.Name {
			p.printf(" (%s)", nic.RDMA)
		}
		if nic.PCIBusID != "" {
			p.printf(", %s", nic.PCIBusID)
		}
		p.printf(", NUMA node %d", nic.NUMANode)
		if nic.Gbps > 0 {
			p.printf(", %s Gb/s", strconv.FormatFloat(nic.Gbps, 'f', -1, 64))
		} else {
			p.printf(", speed unknown")
		}
		p.printf("\n")
	}
}

func nicClass(nic NIC, gpu int) string {
	if gpu < len(nic.GPUs) {
		return nic.GPUs[gpu].String()
	}
	return "N/A"
}

func orNA(s string) string {
	if s == "" {
		return "N/A"
	}
	return s
}
