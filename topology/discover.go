package topology

import (
	"fmt"
	"math/bits"
	"slices"
	"strings"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// Option changes how Discover looks at the machine.
type Option func(*options)

type options struct {
	root   string
	lib    NVML
	libSet bool
}

// WithRoot reads sysfs and procfs under dir (dir/sys, dir/proc) instead of /.
func WithRoot(dir string) Option { return func(o *options) { o.root = dir } }

// WithNVML uses lib instead of the system's NVML (nvml.New()); nil discovers without NVML.
func WithNVML(lib NVML) Option { return func(o *options) { o.lib, o.libSet = lib, true } }

// maxCPUs bounds the CPU affinity mask asked of NVML.
const maxCPUs = 4096

// Discover describes this machine as a one-node topology named after the host. GPUs come
// from NVML when it initialises (names, memory, NVLink counts, PCIe classes, CPU affinity)
// and from sysfs otherwise (PCI bus order, PCIe classes from the PCI tree, no NVLink); what
// NVML lacks (the NUMA node on VMs, for one) comes from sysfs, then from assumptions that
// the machine's notes state. NUMA nodes and NICs always come from sysfs. A machine without
// a GPU is not an error: the topology has no GPU and its first note says "no GPU found
// (why)". Discover does not panic, whatever NVML does; its error is a topology that fails
// validation, which would be a bug.
func Discover(opts ...Option) (*Topology, error) {
	o := options{root: "/"}
	for _, opt := range opts {
		opt(&o)
	}
	if !o.libSet {
		o.lib = nvml.New()
	}
	s := sysfs{root: o.root}
	host := s.hostname()
	m := discoverMachine(s, o.lib)
	t := &Topology{
		Name:        host,
		Description: "discovered on " + host,
		Machines:    map[string]*Machine{host: m},
		Nodes:       []Node{{Name: host, Machine: host}},
	}
	if err := t.Validate(); err != nil {
		return t, fmt.Errorf("discovered topology: %w", err)
	}
	return t, nil
}

// found is one discovered GPU with what its links are computed from.
type found struct {
	GPU
	dev pciDev      // sysfs's view; its path is unknown when sysfs lacks the device
	h   nvml.Device // nil without NVML
	nv  nvEnds
}

func discoverMachine(s sysfs, lib NVML) *Machine {
	m := &Machine{GPUs: []GPU{}}
	var n notes
	numa, note := s.numaNodes()
	m.NUMA = numa
	if note != "" {
		n.add(note)
	}
	var gpus []found
	var g *guard
	why := "NVML not used"
	if lib != nil {
		var err error
		if g, err = initNVML(lib); err != nil {
			why = "NVML: " + err.Error()
		} else {
			defer g.shutdown()
			gpus = nvmlGPUs(g, s, &n)
			if len(gpus) == 0 {
				why = "NVML: no device"
			}
		}
	}
	if g == nil {
		gpus = sysfsGPUs(s)
		if len(gpus) > 0 {
			n.add(fmt.Sprintf("GPUs from sysfs (%s): NVLink is not visible, pairs show their PCIe class", why))
		}
	}
	if len(gpus) == 0 {
		msg := why
		if g == nil {
			msg += "; sysfs: no NVIDIA GPU in /sys/bus/pci/devices"
		}
		n.first("no GPU found (" + msg + ")")
	}
	for i := range gpus {
		f := &gpus[i]
		f.Index = i
		f.NUMANode = n.numaNode(i, f.NUMANode, f.dev, numa)
		if f.CPUs == "" {
			f.CPUs = f.dev.cpus
		}
		if f.CPUs == "" {
			if node, ok := m.NUMANodeByID(f.NUMANode); ok {
				f.CPUs = node.CPUs
				n.gpu(i, fmt.Sprintf("CPU affinity unknown: NUMA node %d's CPUs assumed", f.NUMANode))
			}
		}
		m.GPUs = append(m.GPUs, f.GPU)
	}
	m.Links = links(g, gpus, &n)
	for _, nic := range s.nics() {
		if nic.NUMANode < 0 {
			nic.NUMANode = fallbackNode(numa)
		}
		var classes []Class
		for _, f := range gpus {
			c := pciClass(f.dev.path, nic.path, f.NUMANode, nic.NUMANode)
			if c.Kind == KindUnknown {
				classes = nil
				break
			}
			classes = append(classes, c)
		}
		nic.GPUs = classes
		m.NICs = append(m.NICs, nic.NIC)
	}
	m.Notes = n.list()
	return m
}

// fallbackNode is the node assumed when a device's is unknown: 0, or the first listed.
func fallbackNode(numa []NUMANode) int {
	for _, n := range numa {
		if n.ID == 0 {
			return 0
		}
	}
	return numa[0].ID
}

// nvmlGPUs lists the GPUs NVML sees, in its index order.
func nvmlGPUs(g *guard, s sysfs, n *notes) []found {
	count, err := call(g, "nvmlDeviceGetCount", g.lib.DeviceGetCount)
	if err != nil {
		n.add("NVML: " + err.Error())
		return nil
	}
	var gpus []found
	for i := range count {
		h, err := call(g, "nvmlDeviceGetHandleByIndex", func() (nvml.Device, nvml.Return) { return g.lib.DeviceGetHandleByIndex(i) })
		if err != nil || h == nil {
			n.add(fmt.Sprintf("NVML device %d skipped: %v", i, err))
			continue
		}
		f := found{h: h}
		f.NUMANode = -1
		idx := len(gpus)
		if v, err := call(g, "nvmlDeviceGetName", h.GetName); err == nil {
			f.Name = v
		} else {
			f.Name = "NVIDIA GPU"
			n.gpu(idx, "name unknown: "+err.Error())
		}
		if v, err := call(g, "nvmlDeviceGetUUID", h.GetUUID); err == nil {
			f.UUID = v
		}
		if v, err := call(g, "nvmlDeviceGetMemoryInfo", h.GetMemoryInfo); err == nil {
			f.MemoryMiB = v.Total >> 20
		}
		pci, err := call(g, "nvmlDeviceGetPciInfo", h.GetPciInfo)
		if bus, ok := normalizeBusID(cString(pci.BusId[:])); err == nil && ok {
			f.PCIBusID = bus
			f.dev = s.pciDevice(bus)
		} else {
			f.dev = pciDev{numa: -1}
			if err == nil {
				err = fmt.Errorf("nvmlDeviceGetPciInfo: bus id %q", cString(pci.BusId[:]))
			}
			n.gpu(idx, "PCI bus id unknown ("+err.Error()+"): no sysfs fallbacks")
		}
		if v, err := call(g, "nvmlDeviceGetNumaNodeId", h.GetNumaNodeId); err == nil && v >= 0 {
			f.NUMANode = v
		} else if err != nil {
			n.gpu(idx, "no NUMA node from NVML ("+err.Error()+")")
		}
		mask, err := call(g, "nvmlDeviceGetCpuAffinity", func() ([]uint, nvml.Return) { return h.GetCpuAffinity(maxCPUs) })
		switch cpus := maskCPUs(mask); {
		case err != nil:
			n.gpu(idx, "no CPU affinity from NVML ("+err.Error()+")")
		case len(cpus) == 0:
			n.gpu(idx, "no CPU affinity from NVML (an empty mask)")
		default:
			f.CPUs = FormatCPUs(cpus)
		}
		f.nv = nvlinkEnds(g, h)
		gpus = append(gpus, f)
	}
	return gpus
}

// maskCPUs reads a CPU mask of unsigned longs (bit b of word w is CPU w·wordsize+b).
func maskCPUs(mask []uint) []int {
	var cpus []int
	for w, word := range mask {
		for b := range bits.UintSize {
			if word&(1<<b) != 0 {
				cpus = append(cpus, w*bits.UintSize+b)
			}
		}
	}
	return cpus
}

// sysfsGPUs lists NVIDIA GPUs from the PCI tree, in bus order (nvidia-smi's order), named
// by the driver's /proc file when the driver is loaded.
func sysfsGPUs(s sysfs) []found {
	var gpus []found
	for _, bus := range s.nvidiaGPUs() {
		f := found{dev: s.pciDevice(bus)}
		f.PCIBusID = bus
		f.NUMANode = -1
		f.Name, f.UUID = s.nvidiaInfo(bus)
		if f.Name == "" {
			f.Name = "NVIDIA GPU [10de:" + strings.TrimPrefix(s.read("sys/bus/pci/devices/"+bus+"/device"), "0x") + "]"
		}
		gpus = append(gpus, f)
	}
	return gpus
}

// nvEnds are a GPU's active NVLinks: how many reach an NVSwitch, and how many reach each
// peer directly (by the peer's PCI bus id).
type nvEnds struct {
	switches int
	direct   map[string]int
	maybe    map[string]int // remote type unknown: a GPU if the bus id is one, else a switch
}

func nvlinkEnds(g *guard, h nvml.Device) nvEnds {
	e := nvEnds{direct: map[string]int{}, maybe: map[string]int{}}
	for l := range nvml.NVLINK_MAX_LINKS {
		st, err := call(g, "nvmlDeviceGetNvLinkState", func() (nvml.EnableState, nvml.Return) { return h.GetNvLinkState(l) })
		if err != nil || st != nvml.FEATURE_ENABLED {
			continue // links past the GPU's last are INVALID_ARGUMENT
		}
		typ, typeErr := call(g, "nvmlDeviceGetNvLinkRemoteDeviceType", func() (nvml.IntNvLinkDeviceType, nvml.Return) {
			return h.GetNvLinkRemoteDeviceType(l)
		})
		if typeErr == nil && typ == nvml.NVLINK_DEVICE_TYPE_SWITCH {
			e.switches++
			continue
		}
		if typeErr == nil && typ != nvml.NVLINK_DEVICE_TYPE_GPU {
			continue
		}
		pci, err := call(g, "nvmlDeviceGetNvLinkRemotePciInfo", func() (nvml.PciInfo, nvml.Return) { return h.GetNvLinkRemotePciInfo(l) })
		bus, ok := normalizeBusID(cString(pci.BusId[:]))
		switch {
		case err != nil || !ok:
			if typeErr != nil {
				e.switches++ // nothing says it is a GPU; on NVSwitch systems it is a switch
			}
		case typeErr != nil:
			e.maybe[bus]++
		default:
			e.direct[bus]++
		}
	}
	return e
}

// links computes the class of every GPU pair: NVLink when NVML says the pair talks over
// NVLink (DeviceGetP2PStatus with P2P_CAPS_INDEX_NVLINK; the remote PCI info of a link
// names the NVSwitch, not the peer), with the links the two bond; else the PCIe class from
// NVML's common ancestor, else from the sysfs PCI tree, else SYS, noted.
func links(g *guard, gpus []found, n *notes) [][]Class {
	isGPU := map[string]bool{}
	for _, f := range gpus {
		if f.PCIBusID != "" {
			isGPU[f.PCIBusID] = true
		}
	}
	for i := range gpus {
		for bus, k := range gpus[i].nv.maybe {
			if isGPU[bus] {
				gpus[i].nv.direct[bus] += k
			} else {
				gpus[i].nv.switches += k
			}
		}
	}
	out := make([][]Class, len(gpus))
	for i := range out {
		out[i] = make([]Class, len(gpus))
		out[i][i] = ClassSelf
	}
	unknown := 0
	for i := range gpus {
		for j := i + 1; j < len(gpus); j++ {
			c := pairClass(g, &gpus[i], &gpus[j], n)
			if c.Kind == KindUnknown {
				c = ClassSYS
				unknown++
			}
			out[i][j], out[j][i] = c, c
		}
	}
	if unknown > 0 {
		n.add(fmt.Sprintf("%d GPU pairs: neither NVML nor sysfs gave a class: SYS assumed", unknown))
	}
	return out
}

func pairClass(g *guard, a, b *found, n *notes) Class {
	if g != nil && a.h != nil && b.h != nil {
		count := max(a.nv.direct[b.PCIBusID], b.nv.direct[a.PCIBusID]) + min(a.nv.switches, b.nv.switches)
		if a.PCIBusID == "" || b.PCIBusID == "" {
			count = min(a.nv.switches, b.nv.switches)
		}
		st, err := call(g, "nvmlDeviceGetP2PStatus", func() (nvml.GpuP2PStatus, nvml.Return) {
			return a.h.GetP2PStatus(b.h, nvml.P2P_CAPS_INDEX_NVLINK)
		})
		switch {
		case err == nil && st == nvml.P2P_STATUS_OK:
			return NV(count)
		case err != nil && count > 0:
			n.add("NVLink from link states (" + err.Error() + ")")
			return NV(count)
		}
		level, err := call(g, "nvmlDeviceGetTopologyCommonAncestor", func() (nvml.GpuTopologyLevel, nvml.Return) {
			return a.h.GetTopologyCommonAncestor(b.h)
		})
		if err == nil {
			if c, ok := ancestorClass[level]; ok {
				return c
			}
		}
	}
	return pciClass(a.dev.path, b.dev.path, a.NUMANode, b.NUMANode)
}

// ancestorClass maps NVML's common ancestor to nvidia-smi's class.
var ancestorClass = map[nvml.GpuTopologyLevel]Class{
	nvml.TOPOLOGY_INTERNAL:   ClassPIX, // one board
	nvml.TOPOLOGY_SINGLE:     ClassPIX,
	nvml.TOPOLOGY_MULTIPLE:   ClassPXB,
	nvml.TOPOLOGY_HOSTBRIDGE: ClassPHB,
	nvml.TOPOLOGY_NODE:       ClassNODE,
	nvml.TOPOLOGY_SYSTEM:     ClassSYS,
}

// notes collects what discovery could not see, once per message; a per-GPU message lists
// the GPUs it concerns.
type notes struct {
	head  string
	order []string
	gpus  map[string][]int
}

func (n *notes) first(msg string) { n.head = msg }

func (n *notes) add(msg string) { n.gpu(-1, msg) }

func (n *notes) gpu(i int, msg string) {
	if n.gpus == nil {
		n.gpus = map[string][]int{}
	}
	if _, seen := n.gpus[msg]; !seen {
		n.order = append(n.order, msg)
		n.gpus[msg] = nil
	}
	if i >= 0 && !slices.Contains(n.gpus[msg], i) {
		n.gpus[msg] = append(n.gpus[msg], i)
	}
}

// numaNode settles GPU i's NUMA node: NVML's, else sysfs's, else the fallback node; the
// fallbacks are noted.
func (n *notes) numaNode(i, fromNVML int, dev pciDev, numa []NUMANode) int {
	listed := func(id int) bool {
		return slices.ContainsFunc(numa, func(x NUMANode) bool { return x.ID == id })
	}
	switch {
	case fromNVML >= 0 && listed(fromNVML):
		return fromNVML
	case dev.numa >= 0 && listed(dev.numa):
		return dev.numa
	}
	node := fallbackNode(numa)
	n.gpu(i, fmt.Sprintf("NUMA node unknown: node %d assumed", node))
	return node
}

func (n *notes) list() []string {
	var out []string
	if n.head != "" {
		out = append(out, n.head)
	}
	for _, msg := range n.order {
		g := n.gpus[msg]
		if len(g) == 0 {
			out = append(out, msg)
			continue
		}
		names := make([]string, len(g))
		for k, i := range g {
			names[k] = fmt.Sprintf("GPU%d", i)
		}
		out = append(out, strings.Join(names, ", ")+": "+msg)
	}
	return out
}
