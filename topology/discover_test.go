package topology

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxh100"
	"github.com/rogpeppe/go-internal/txtar"
)

// fakeRoot unpacks testdata/sysfs/NAME.txtar into a temporary directory and makes the
// links its "symlinks" file lists (PATH -> TARGET), so that git holds no symlinks.
func fakeRoot(t *testing.T, name string) string {
	t.Helper()
	a, err := txtar.ParseFile(filepath.Join("testdata", "sysfs", name+".txtar"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, f := range a.Files {
		if f.Name == "symlinks" {
			continue
		}
		p := filepath.Join(dir, f.Name)
		if err := os.MkdirAll(filepath.Dir(p), 0o777); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, f.Data, 0o666); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range a.Files {
		if f.Name != "symlinks" {
			continue
		}
		for line := range strings.Lines(string(f.Data)) {
			from, to, ok := strings.Cut(strings.TrimSpace(line), " -> ")
			if !ok {
				t.Fatalf("symlinks: bad line %q", line)
			}
			p := filepath.Join(dir, from)
			if err := os.MkdirAll(filepath.Dir(p), 0o777); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(to, p); err != nil {
				t.Fatal(err)
			}
		}
	}
	return dir
}

// emptyRoot is a machine with two CPUs on one NUMA node, no PCI device and no NIC.
func emptyRoot(t *testing.T) string {
	dir := t.TempDir()
	for name, data := range map[string]string{
		"proc/sys/kernel/hostname":              "cpu-host\n",
		"sys/devices/system/node/node0/cpulist": "0-1\n",
		"sys/devices/system/cpu/online":         "0-1\n",
	} {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o777); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o666); err != nil {
			t.Fatal(err)
		}
	}
	os.MkdirAll(filepath.Join(dir, "sys/bus/pci/devices"), 0o777)
	return dir
}

func discover(t *testing.T, opts ...Option) *Machine {
	t.Helper()
	top, err := Discover(opts...)
	if err != nil {
		t.Fatal(err)
	}
	if top.NumNodes() != 1 {
		t.Fatalf("Discover gave %d nodes", top.NumNodes())
	}
	return top.MachineOf(0)
}

// noNVML is a library that is not there: Init fails as go-nvml's does when dlopen fails.
func noNVML() NVML {
	return &mock.Interface{InitFunc: func() nvml.Return { return nvml.ERROR_LIBRARY_NOT_FOUND }}
}

func TestDiscoverNoGPU(t *testing.T) {
	root := emptyRoot(t)
	for _, tc := range []struct {
		name string
		lib  NVML
		want string
	}{
		{"no library", noNVML(), "no GPU found (NVML: libnvidia-ml.so.1 not found; sysfs: no NVIDIA GPU in /sys/bus/pci/devices)"},
		{"no driver", &mock.Interface{InitFunc: func() nvml.Return { return nvml.ERROR_DRIVER_NOT_LOADED }},
			"no GPU found (NVML: nvmlInit: ERROR_DRIVER_NOT_LOADED; sysfs: no NVIDIA GPU in /sys/bus/pci/devices)"},
		{"Init panics", &mock.Interface{}, "no GPU found (NVML: nvmlInit: panic: Interface.InitFunc: method is nil but Interface.Init was just called; sysfs: no NVIDIA GPU in /sys/bus/pci/devices)"},
		{"no NVML", nil, "no GPU found (NVML not used; sysfs: no NVIDIA GPU in /sys/bus/pci/devices)"},
		{"no device", devices(t, nil, nil), "no GPU found (NVML: no device)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := discover(t, WithRoot(root), WithNVML(tc.lib))
			if len(m.GPUs) != 0 || len(m.Notes) == 0 || m.Notes[0] != tc.want {
				t.Errorf("Discover: %d GPUs, notes %q\nwant first note %s", len(m.GPUs), m.Notes, tc.want)
			}
			if len(m.NUMA) != 1 || m.NUMA[0].CPUs != "0-1" || len(m.NICs) != 0 || len(m.Links) != 0 {
				t.Errorf("Discover: NUMA %v, NICs %v, links %v", m.NUMA, m.NICs, m.Links)
			}
		})
	}
}

// TestDiscoverHere runs discovery on this machine with the real NVML: whatever is there, it
// must not crash, must validate, and must say why when it finds no GPU.
func TestDiscoverHere(t *testing.T) {
	top, err := Discover()
	if err != nil {
		t.Fatal(err)
	}
	m := top.MachineOf(0)
	if len(m.GPUs) == 0 && (len(m.Notes) == 0 || !strings.HasPrefix(m.Notes[0], "no GPU found (")) {
		t.Errorf("no GPU and no reason: notes %q", m.Notes)
	}
	t.Logf("%d GPUs, notes %q", len(m.GPUs), m.Notes)
}

// TestDiscoverSysfs reads the fake host of testdata/sysfs/host.txtar without NVML: GPUs in
// bus order, PCIe classes from the PCI tree, NUMA and CPU fallbacks, NICs with speeds.
func TestDiscoverSysfs(t *testing.T) {
	m := discover(t, WithRoot(fakeRoot(t, "host")), WithNVML(nil))
	var bus []string
	for _, g := range m.GPUs {
		bus = append(bus, g.PCIBusID)
	}
	if want := []string{"0000:03:00.0", "0000:06:00.0", "0000:09:00.0", "0000:41:00.0", "0000:81:00.0"}; !slices.Equal(bus, want) {
		t.Fatalf("GPUs %v, want %v", bus, want)
	}
	want := [][]string{
		{"X", "PHB", "PXB", "NODE", "SYS"},
		{"PHB", "X", "PHB", "NODE", "SYS"},
		{"PXB", "PHB", "X", "NODE", "SYS"},
		{"NODE", "NODE", "NODE", "X", "SYS"},
		{"SYS", "SYS", "SYS", "SYS", "X"},
	}
	if got := classStrings(m.Links); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("links %v\nwant  %v", got, want)
	}
	g0, g1, g4 := m.GPUs[0], m.GPUs[1], m.GPUs[4]
	if g0.Name != "NVIDIA H100 80GB HBM3" || g0.UUID != "GPU-0a1b2c3d-0000-1111-2222-333344445555" || g1.Name != "NVIDIA GPU [10de:2330]" {
		t.Errorf("names %q %q %q", g0.Name, g0.UUID, g1.Name)
	}
	if g0.NUMANode != 0 || g0.CPUs != "0-3,8-11" || g1.NUMANode != 0 || g1.CPUs != "0-3,8-11" || g4.NUMANode != 1 || g4.CPUs != "4-7,12-15" {
		t.Errorf("affinity %d %s, %d %s, %d %s", g0.NUMANode, g0.CPUs, g1.NUMANode, g1.CPUs, g4.NUMANode, g4.CPUs)
	}
	wantNICs := []NIC{
		{Name: "ibp5s0", RDMA: "mlx5_0", PCIBusID: "0000:05:00.0", NUMANode: 0, Gbps: 400, GPUs: []Class{ClassPIX, ClassPHB, ClassPXB, ClassNODE, ClassSYS}},
		{Name: "eth0", PCIBusID: "0000:80:02.0", NUMANode: 0, Gbps: 25, GPUs: []Class{ClassNODE, ClassNODE, ClassNODE, ClassNODE, ClassPHB}},
	}
	if fmt.Sprintf("%+v", m.NICs) != fmt.Sprintf("%+v", wantNICs) {
		t.Errorf("NICs\n%+v\nwant\n%+v", m.NICs, wantNICs)
	}
	wantNotes := []string{
		"GPUs from sysfs (NVML not used): NVLink is not visible, pairs show their PCIe class",
		"GPU1: NUMA node unknown: node 0 assumed",
		"GPU1: CPU affinity unknown: NUMA node 0's CPUs assumed",
	}
	if !slices.Equal(m.Notes, wantNotes) {
		t.Errorf("notes %q\nwant  %q", m.Notes, wantNotes)
	}
}

func classStrings(links [][]Class) [][]string {
	out := make([][]string, len(links))
	for i, row := range links {
		for _, c := range row {
			out[i] = append(out[i], c.String())
		}
	}
	return out
}

// fakeGPU is one GPU of a fake NVML.
type fakeGPU struct {
	bus      string // NVML form
	switches int    // active NVLinks to NVSwitch
	direct   map[int]int
	numa     int    // -1: GetNumaNodeId is NOT_SUPPORTED
	mask     []uint // CPU affinity
	p2p      map[int]nvml.GpuP2PStatus
	ancestor map[int]nvml.GpuTopologyLevel
}

// devices is a fake NVML with these GPUs; the symbols in missing are absent from the
// library, and calling one fails the test.
func devices(t *testing.T, gpus []fakeGPU, missing []string) *mock.Interface {
	devs := make([]*mock.Device, len(gpus))
	index := map[nvml.Device]int{}
	for i := range gpus {
		devs[i] = &mock.Device{}
		index[devs[i]] = i
	}
	busID := func(s string) (a [32]int8) {
		for k, c := range []byte(s) {
			a[k] = int8(c)
		}
		return a
	}
	for i, g := range gpus {
		d := devs[i]
		d.GetNameFunc = func() (string, nvml.Return) { return "NVIDIA H100 80GB HBM3", nvml.SUCCESS }
		d.GetUUIDFunc = func() (string, nvml.Return) { return fmt.Sprintf("GPU-%d", i), nvml.SUCCESS }
		d.GetMemoryInfoFunc = func() (nvml.Memory, nvml.Return) { return nvml.Memory{Total: 81559 << 20}, nvml.SUCCESS }
		d.GetPciInfoFunc = func() (nvml.PciInfo, nvml.Return) { return nvml.PciInfo{BusId: busID(g.bus)}, nvml.SUCCESS }
		d.GetNumaNodeIdFunc = func() (int, nvml.Return) {
			if slices.Contains(missing, "nvmlDeviceGetNumaNodeId") {
				t.Error("GetNumaNodeId called though the library lacks it")
			}
			if g.numa < 0 {
				return 0, nvml.ERROR_NOT_SUPPORTED
			}
			return g.numa, nvml.SUCCESS
		}
		d.GetCpuAffinityFunc = func(n int) ([]uint, nvml.Return) { return g.mask, nvml.SUCCESS }
		// links: first the switch links, then the direct ones in peer order
		var remote []int // -1: switch, else the peer
		for range g.switches {
			remote = append(remote, -1)
		}
		for p := range len(gpus) {
			for range g.direct[p] {
				remote = append(remote, p)
			}
		}
		d.GetNvLinkStateFunc = func(l int) (nvml.EnableState, nvml.Return) {
			if l >= 18 {
				return 0, nvml.ERROR_INVALID_ARGUMENT
			}
			if l < len(remote) {
				return nvml.FEATURE_ENABLED, nvml.SUCCESS
			}
			return nvml.FEATURE_DISABLED, nvml.SUCCESS
		}
		d.GetNvLinkRemoteDeviceTypeFunc = func(l int) (nvml.IntNvLinkDeviceType, nvml.Return) {
			if remote[l] < 0 {
				return nvml.NVLINK_DEVICE_TYPE_SWITCH, nvml.SUCCESS
			}
			return nvml.NVLINK_DEVICE_TYPE_GPU, nvml.SUCCESS
		}
		d.GetNvLinkRemotePciInfoFunc = func(l int) (nvml.PciInfo, nvml.Return) {
			if remote[l] < 0 {
				return nvml.PciInfo{BusId: busID("FFFFFFFF:FF:FF.0")}, nvml.SUCCESS
			}
			return nvml.PciInfo{BusId: busID(gpus[remote[l]].bus)}, nvml.SUCCESS
		}
		d.GetP2PStatusFunc = func(peer nvml.Device, _ nvml.GpuP2PCapsIndex) (nvml.GpuP2PStatus, nvml.Return) {
			if st, ok := g.p2p[index[peer]]; ok {
				return st, nvml.SUCCESS
			}
			return nvml.P2P_STATUS_NOT_SUPPORTED, nvml.SUCCESS
		}
		d.GetTopologyCommonAncestorFunc = func(peer nvml.Device) (nvml.GpuTopologyLevel, nvml.Return) {
			if l, ok := g.ancestor[index[peer]]; ok {
				return l, nvml.SUCCESS
			}
			return 0, nvml.ERROR_NOT_SUPPORTED
		}
	}
	ext := &mock.ExtendedInterface{LookupSymbolFunc: func(s string) error {
		if slices.Contains(missing, s) {
			return fmt.Errorf("symbol %q not found", s)
		}
		return nil
	}}
	return &mock.Interface{
		InitFunc:           func() nvml.Return { return nvml.SUCCESS },
		ShutdownFunc:       func() nvml.Return { return nvml.SUCCESS },
		ExtensionsFunc:     func() nvml.ExtendedInterface { return ext },
		DeviceGetCountFunc: func() (int, nvml.Return) { return len(gpus), nvml.SUCCESS },
		DeviceGetHandleByIndexFunc: func(i int) (nvml.Device, nvml.Return) {
			return devs[i], nvml.SUCCESS
		},
	}
}

// TestDiscoverNVSwitch is the 2 × H100 host of GPU.md: 18 NVLinks from each GPU to
// NVSwitch, NVML without GetNumaNodeId support, sysfs numa_node -1, all 32 CPUs.
func TestDiscoverNVSwitch(t *testing.T) {
	gpus := []fakeGPU{
		{bus: "00000000:00:06.0", switches: 18, numa: -1, mask: []uint{0xffffffff}, p2p: map[int]nvml.GpuP2PStatus{1: nvml.P2P_STATUS_OK}, ancestor: map[int]nvml.GpuTopologyLevel{1: nvml.TOPOLOGY_HOSTBRIDGE}},
		{bus: "00000000:00:07.0", switches: 18, numa: -1, mask: []uint{0xffffffff}, p2p: map[int]nvml.GpuP2PStatus{0: nvml.P2P_STATUS_OK}, ancestor: map[int]nvml.GpuTopologyLevel{0: nvml.TOPOLOGY_HOSTBRIDGE}},
	}
	for _, tc := range []struct {
		name    string
		missing []string
		notes   []string
	}{
		{"NUMA not supported", nil, []string{
			"GPU0, GPU1: no NUMA node from NVML (nvmlDeviceGetNumaNodeId: ERROR_NOT_SUPPORTED)",
			"GPU0, GPU1: NUMA node unknown: node 0 assumed",
		}},
		{"NUMA symbol missing", []string{"nvmlDeviceGetNumaNodeId"}, []string{
			"GPU0, GPU1: no NUMA node from NVML (nvmlDeviceGetNumaNodeId: ERROR_FUNCTION_NOT_FOUND)",
			"GPU0, GPU1: NUMA node unknown: node 0 assumed",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := discover(t, WithRoot(emptyRoot(t)), WithNVML(devices(t, gpus, tc.missing)))
			if got := classStrings(m.Links); fmt.Sprint(got) != "[[X NV18] [NV18 X]]" {
				t.Errorf("links %v", got)
			}
			for _, g := range m.GPUs {
				if g.NUMANode != 0 || g.CPUs != "0-31" || g.MemoryMiB != 81559 || !strings.HasPrefix(g.PCIBusID, "0000:00:0") {
					t.Errorf("GPU %+v", g)
				}
			}
			if !slices.Equal(m.Notes, tc.notes) {
				t.Errorf("notes %q\nwant  %q", m.Notes, tc.notes)
			}
		})
	}
}

// TestDiscoverPCIe: NVLink bridges between pairs, PCIe classes from NVML's common ancestor,
// and the sysfs PCI tree when NVML cannot say.
func TestDiscoverPCIe(t *testing.T) {
	anc := func(l ...nvml.GpuTopologyLevel) map[int]nvml.GpuTopologyLevel {
		m := map[int]nvml.GpuTopologyLevel{}
		for i, v := range l {
			if v != 0 {
				m[i] = v
			}
		}
		return m
	}
	const none = 0 // NOT_SUPPORTED: the sysfs tree decides
	ok := nvml.P2P_STATUS_OK
	// GPU0-GPU1 bridged by 4 NVLinks; GPU2 and GPU3 are the fake tree's 0000:09:00.0 and
	// 0000:41:00.0, whose class NVML does not give.
	gpus := []fakeGPU{
		{bus: "00000000:1A:00.0", direct: map[int]int{1: 4}, numa: 0, p2p: map[int]nvml.GpuP2PStatus{1: ok}, ancestor: anc(0, nvml.TOPOLOGY_SINGLE, nvml.TOPOLOGY_MULTIPLE, nvml.TOPOLOGY_SYSTEM)},
		{bus: "00000000:1B:00.0", direct: map[int]int{0: 4}, numa: 0, p2p: map[int]nvml.GpuP2PStatus{0: ok}, ancestor: anc(nvml.TOPOLOGY_SINGLE, 0, nvml.TOPOLOGY_HOSTBRIDGE, nvml.TOPOLOGY_NODE)},
		{bus: "00000000:09:00.0", numa: -1, ancestor: anc(nvml.TOPOLOGY_MULTIPLE, nvml.TOPOLOGY_HOSTBRIDGE, 0, none)},
		{bus: "00000000:41:00.0", numa: 0, ancestor: anc(nvml.TOPOLOGY_SYSTEM, nvml.TOPOLOGY_NODE, none, 0)},
	}
	m := discover(t, WithRoot(fakeRoot(t, "host")), WithNVML(devices(t, gpus, nil)))
	want := "[[X NV4 PXB SYS] [NV4 X PHB NODE] [PXB PHB X NODE] [SYS NODE NODE X]]"
	if got := classStrings(m.Links); fmt.Sprint(got) != want {
		t.Errorf("links %v\nwant  %v", got, want)
	}
	// No CPU mask: local_cpulist from sysfs, else the NUMA node's CPUs; GPU2's NUMA node
	// from sysfs.
	if m.GPUs[2].NUMANode != 0 || m.GPUs[2].CPUs != "0-3,8-11" || m.GPUs[0].CPUs != "0-3,8-11" {
		t.Errorf("GPUs %+v", m.GPUs)
	}
	wantNotes := []string{
		"GPU0, GPU1, GPU2, GPU3: no CPU affinity from NVML (an empty mask)",
		"GPU2: no NUMA node from NVML (nvmlDeviceGetNumaNodeId: ERROR_NOT_SUPPORTED)",
		"GPU0, GPU1: CPU affinity unknown: NUMA node 0's CPUs assumed",
	}
	if !slices.Equal(m.Notes, wantNotes) {
		t.Errorf("notes %q\nwant  %q", m.Notes, wantNotes)
	}
}

// TestDiscoverPartialMock runs discovery against go-nvml's DGX H100 mock, most of whose
// methods are unset (calling one panics) and whose PCI info has no bus id: discovery must
// finish with what it can read, and say what it could not.
func TestDiscoverPartialMock(t *testing.T) {
	top, err := Discover(WithRoot(emptyRoot(t)), WithNVML(dgxh100.New()))
	if err != nil {
		t.Fatal(err)
	}
	m := top.MachineOf(0)
	if len(m.GPUs) != 8 || m.GPUs[7].Name != "NVIDIA H100 80GB HBM3" || m.GPUs[7].MemoryMiB != 81920 || m.Links[0][7] != ClassSYS {
		t.Errorf("GPUs %+v, links %v", m.GPUs, m.Links)
	}
	var b bytes.Buffer
	if err := top.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`GPU0, GPU1, GPU2, GPU3, GPU4, GPU5, GPU6, GPU7: PCI bus id unknown (nvmlDeviceGetPciInfo: bus id ""): no sysfs fallbacks`,
		"GPU0, GPU1, GPU2, GPU3, GPU4, GPU5, GPU6, GPU7: no NUMA node from NVML (nvmlDeviceGetNumaNodeId: panic: Device.GetNumaNodeIdFunc: method is nil but Device.GetNumaNodeId was just called)",
		"28 GPU pairs: neither NVML nor sysfs gave a class: SYS assumed",
	} {
		if !slices.Contains(m.Notes, want) {
			t.Errorf("no note %q in\n%s", want, strings.Join(m.Notes, "\n"))
		}
	}
}

func TestPCIClass(t *testing.T) {
	p := func(s string) pciPath { return parsePCIPath(s) }
	sw := "pci0000:00/0000:00:01.0/0000:01:00.0"
	cases := []struct {
		a, b         string
		numaA, numaB int
		want         Class
	}{
		{sw + "/0000:02:00.0/0000:03:00.0", sw + "/0000:02:01.0/0000:04:00.0", 0, 0, ClassPIX},
		{sw + "/0000:02:00.0/0000:03:00.0", sw + "/0000:02:00.0/0000:03:00.1", 0, 0, ClassPIX},
		{sw + "/0000:02:00.0/0000:03:00.0", sw + "/0000:02:01.0/0000:05:00.0/0000:06:00.0/0000:07:00.0", 0, 0, ClassPXB},
		{"pci0000:00/0000:00:06.0", "pci0000:00/0000:00:07.0", 0, 0, ClassPHB},
		{"pci0000:00/0000:00:06.0", "pci0000:40/0000:40:01.0/0000:41:00.0", 0, 0, ClassNODE},
		{"pci0000:00/0000:00:06.0", "pci0000:80/0000:80:01.0/0000:81:00.0", 0, 1, ClassSYS},
		{"pci0000:00/0000:00:06.0", "virtual/net/lo", 0, 0, Class{}},
		{"pci0000:00/0000:00:06.0/virtio1/net/eth0", "pci0000:00/0000:00:07.0", 0, 0, ClassPHB},
	}
	for _, tc := range cases {
		if got := pciClass(p(tc.a), p(tc.b), tc.numaA, tc.numaB); got != tc.want {
			t.Errorf("pciClass(%s, %s) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
	}
	for in, want := range map[string]string{"00000000:1B:00.0": "0000:1b:00.0", "0000:1b:00.0": "0000:1b:00.0", "00010000:01:02.7": "10000:01:02.7", "FFFFFFFF:FF:FF.0": "ffffffff:ff:ff.0"} {
		if got, ok := normalizeBusID(in); !ok || got != want {
			t.Errorf("normalizeBusID(%s) = %s, %v", in, got, ok)
		}
	}
	for _, in := range []string{"", "1b:00.0", "0000:1b:00.8", "0000:1b:0.0"} {
		if got, ok := normalizeBusID(in); ok {
			t.Errorf("normalizeBusID(%q) = %s", in, got)
		}
	}
}

// TestDiscoveredRoundTrip saves what discovery found and loads it back.
func TestDiscoveredRoundTrip(t *testing.T) {
	for name, root := range map[string]string{"host": fakeRoot(t, "host"), "empty": emptyRoot(t)} {
		t.Run(name, func(t *testing.T) {
			top, err := Discover(WithRoot(root), WithNVML(nil))
			if err != nil {
				t.Fatal(err)
			}
			b, err := top.JSON()
			if err != nil {
				t.Fatal(err)
			}
			back, err := Parse(b)
			if err != nil {
				t.Fatalf("%v in\n%s", err, b)
			}
			if !reflect.DeepEqual(top, back) {
				t.Errorf("round trip changed the topology:\n%s", b)
			}
		})
	}
}
