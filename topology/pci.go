package topology

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// bdfPattern matches a PCI address as sysfs names it (0000:1b:00.0) or NVML does
// (00000000:1B:00.0).
var bdfPattern = regexp.MustCompile(`^([0-9a-fA-F]{4,8}):([0-9a-fA-F]{2}):([0-9a-fA-F]{2})\.([0-7])$`)

// normalizeBusID writes a PCI address in sysfs form (0000:1b:00.0); ok is false when s is
// not one.
func normalizeBusID(s string) (string, bool) {
	m := bdfPattern.FindStringSubmatch(strings.TrimSpace(s))
	if m == nil {
		return "", false
	}
	dom, err := strconv.ParseUint(m[1], 16, 32)
	if err != nil {
		return "", false
	}
	return fmt.Sprintf("%04x:%s:%s.%s", dom, strings.ToLower(m[2]), strings.ToLower(m[3]), m[4]), true
}

// pciPath is where a PCI device hangs: its host bridge (sysfs pci0000:17) and the chain of
// PCI addresses from the root port down to the device itself.
type pciPath struct {
	root  string
	chain []string
}

func (p pciPath) known() bool { return p.root != "" && len(p.chain) > 0 }

// parsePCIPath reads a device path relative to /sys/devices
// (pci0000:17/0000:17:01.0/0000:18:00.0/…): the host bridge and the PCI addresses that
// follow it, up to the first component that is not one (a driver's child, such as
// virtio2 or net/eth0).
func parsePCIPath(rel string) pciPath {
	parts := strings.Split(rel, "/")
	if len(parts) < 2 || !strings.HasPrefix(parts[0], "pci") {
		return pciPath{}
	}
	p := pciPath{root: parts[0]}
	for _, c := range parts[1:] {
		if !bdfPattern.MatchString(c) {
			break
		}
		p.chain = append(p.chain, c)
	}
	if len(p.chain) == 0 {
		return pciPath{}
	}
	return p
}

// pciClass is the PCIe class of the path between two devices, by nvidia-smi's definitions:
// under one host bridge, PIX when they hang on one PCIe switch (at most two hops up from
// each to the common bridge: the switch's downstream port and the device), PXB when more
// bridges lie between, PHB when they meet only at the host bridge; under different host
// bridges, NODE on one NUMA node and SYS across nodes. The zero Class when a path is not
// known.
func pciClass(a, b pciPath, numaA, numaB int) Class {
	if !a.known() || !b.known() {
		return Class{}
	}
	if a.root != b.root {
		if numaA == numaB {
			return ClassNODE
		}
		return ClassSYS
	}
	common := 0
	for common < len(a.chain) && common < len(b.chain) && a.chain[common] == b.chain[common] {
		common++
	}
	switch hops := len(a.chain) + len(b.chain) - 2*common; {
	case common == 0:
		return ClassPHB
	case hops <= 4:
		return ClassPIX
	default:
		return ClassPXB
	}
}
