package topology

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// sysfs reads the kernel's view of the machine under root (root/sys and root/proc), so that
// tests can point it at a fake tree.
type sysfs struct {
	root string
}

func (s sysfs) path(p string) string { return filepath.Join(s.root, p) }

// read returns the trimmed contents of a file, "" if it cannot be read (sysfs attributes
// that a device lacks, or that fail with EINVAL as a down link's speed does).
func (s sysfs) read(p string) string {
	b, err := os.ReadFile(s.path(p))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

func (s sysfs) hostname() string {
	if h := s.read("proc/sys/kernel/hostname"); h != "" {
		return h
	}
	return "localhost"
}

// numaNodes lists the NUMA nodes with their CPUs; without node directories (some
// containers) it returns one node 0 with the online CPUs, and says so.
func (s sysfs) numaNodes() (nodes []NUMANode, note string) {
	dirs, _ := filepath.Glob(s.path("sys/devices/system/node/node[0-9]*"))
	for _, d := range dirs {
		id, err := strconv.Atoi(strings.TrimPrefix(filepath.Base(d), "node"))
		if err != nil {
			continue
		}
		b, _ := os.ReadFile(filepath.Join(d, "cpulist"))
		nodes = append(nodes, NUMANode{ID: id, CPUs: CPUList(strings.TrimSpace(string(b)))})
	}
	slices.SortFunc(nodes, func(a, b NUMANode) int { return a.ID - b.ID })
	if len(nodes) == 0 {
		return []NUMANode{{ID: 0, CPUs: s.onlineCPUs()}}, "no NUMA nodes in sysfs: one node 0 with every online CPU assumed"
	}
	return nodes, ""
}

func (s sysfs) onlineCPUs() CPUList { return CPUList(s.read("sys/devices/system/cpu/online")) }

// pciDev is what sysfs says about one PCI device.
type pciDev struct {
	busID string
	path  pciPath
	numa  int // -1: unknown
	cpus  CPUList
}

// pciDevice reads the PCI device at busID (sysfs form).
func (s sysfs) pciDevice(busID string) pciDev {
	d := pciDev{busID: busID, numa: -1}
	dir := "sys/bus/pci/devices/" + busID
	if n, err := strconv.Atoi(s.read(dir + "/numa_node")); err == nil && n >= 0 {
		d.numa = n
	}
	d.cpus = CPUList(s.read(dir + "/local_cpulist"))
	d.path = s.devicePath(dir)
	return d
}

// devicePath resolves a sysfs link to a device (bus/pci/devices/X, class/net/eth0/device)
// to its place under /sys/devices and reads its PCI path from there.
func (s sysfs) devicePath(link string) pciPath {
	real, err := filepath.EvalSymlinks(s.path(link))
	if err != nil {
		return pciPath{}
	}
	base, err := filepath.EvalSymlinks(s.path("sys/devices"))
	if err != nil {
		return pciPath{}
	}
	rel, err := filepath.Rel(base, real)
	if err != nil || strings.HasPrefix(rel, "..") {
		return pciPath{}
	}
	return parsePCIPath(filepath.ToSlash(rel))
}

// nvidiaGPUs lists the PCI addresses of NVIDIA display and 3D controllers (vendor 0x10de,
// class 0x0300xx or 0x0302xx), in bus order, which is nvidia-smi's order.
func (s sysfs) nvidiaGPUs() []string {
	entries, _ := os.ReadDir(s.path("sys/bus/pci/devices"))
	var ids []string
	for _, e := range entries {
		dir := "sys/bus/pci/devices/" + e.Name()
		class := s.read(dir + "/class")
		if s.read(dir+"/vendor") == "0x10de" && (strings.HasPrefix(class, "0x0300") || strings.HasPrefix(class, "0x0302")) {
			if id, ok := normalizeBusID(e.Name()); ok {
				ids = append(ids, id)
			}
		}
	}
	slices.Sort(ids)
	return ids
}

// nvidiaInfo reads the driver's /proc/driver/nvidia/gpus/<bus id>/information: the model
// name and the UUID ("" when the driver is not loaded).
func (s sysfs) nvidiaInfo(busID string) (model, uuid string) {
	for line := range strings.Lines(s.read("proc/driver/nvidia/gpus/" + busID + "/information")) {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		switch strings.TrimSpace(k) {
		case "Model":
			model = strings.TrimSpace(v)
		case "GPU UUID":
			uuid = strings.TrimSpace(v)
		}
	}
	return model, uuid
}

// nicDev is a NIC as sysfs shows it, with its PCI path for the GPU classes.
type nicDev struct {
	NIC
	path pciPath
}

// nics lists the network devices that sit on a PCI device (/sys/class/net/*/device), and
// the RDMA devices (/sys/class/infiniband/*), one NIC per PCI function, in bus order.
// Speeds come from net/*/speed (Mb/s) or, for RDMA devices, the first active port's rate.
func (s sysfs) nics() []nicDev {
	byBus := map[string]*nicDev{}
	var order []string
	add := func(link string) *nicDev {
		p := s.devicePath(link)
		if !p.known() {
			return nil // virtual (lo, bridges, veth) or not on PCI
		}
		bus := p.chain[len(p.chain)-1]
		if n, ok := byBus[bus]; ok {
			return n
		}
		n := &nicDev{path: p}
		n.PCIBusID = bus
		n.NUMANode = -1
		if v, err := strconv.Atoi(s.read("sys/bus/pci/devices/" + bus + "/numa_node")); err == nil && v >= 0 {
			n.NUMANode = v
		}
		byBus[bus] = n
		order = append(order, bus)
		return n
	}
	netdevs, _ := os.ReadDir(s.path("sys/class/net"))
	for _, e := range netdevs {
		n := add("sys/class/net/" + e.Name() + "/device")
		if n == nil || n.Name != "" {
			continue
		}
		n.Name = e.Name()
		if mbps, err := strconv.Atoi(s.read("sys/class/net/" + e.Name() + "/speed")); err == nil && mbps > 0 {
			n.Gbps = float64(mbps) / 1000
		}
	}
	rdma, _ := os.ReadDir(s.path("sys/class/infiniband"))
	for _, e := range rdma {
		n := add("sys/class/infiniband/" + e.Name() + "/device")
		if n == nil {
			continue
		}
		n.RDMA = e.Name()
		if n.Name == "" {
			n.Name = e.Name()
		}
		if g := s.rdmaGbps(e.Name()); g > 0 {
			n.Gbps = g // the RDMA port's rate is the fabric's; IPoIB's speed may not be
		}
	}
	slices.Sort(order)
	out := make([]nicDev, 0, len(order))
	for _, bus := range order {
		out = append(out, *byBus[bus])
	}
	return out
}

// rdmaGbps is the rate of the first active port of an RDMA device ("400 Gb/sec (4X NDR)"),
// 0 if none is active or readable.
func (s sysfs) rdmaGbps(dev string) float64 {
	ports, _ := filepath.Glob(s.path("sys/class/infiniband/" + dev + "/ports/*"))
	slices.Sort(ports)
	for _, p := range ports {
		state, _ := os.ReadFile(filepath.Join(p, "state"))
		if len(state) > 0 && !strings.Contains(string(state), "ACTIVE") {
			continue
		}
		rate, _ := os.ReadFile(filepath.Join(p, "rate"))
		f := strings.Fields(string(rate))
		if len(f) >= 2 && f[1] == "Gb/sec" {
			if g, err := strconv.ParseFloat(f[0], 64); err == nil && g > 0 {
				return g
			}
		}
	}
	return 0
}
