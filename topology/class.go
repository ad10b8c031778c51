package topology

import (
	"fmt"
	"strconv"
	"strings"
)

// Kind is the kind of path between two devices, in the terms of `nvidia-smi topo -m`
// (X, NV#, PIX, PXB, PHB, NODE, SYS) plus NET, NCCL's name for a path between nodes.
// Kinds are ordered from the closest to the farthest.
type Kind uint8

const (
	KindUnknown Kind = iota // no class given (an error in a topology)
	Self                    // X: the device itself
	NVLink                  // NV#: a bonded set of # NVLinks (direct or through NVSwitch)
	PIX                     // at most a single PCIe bridge (one PCIe switch)
	PXB                     // multiple PCIe bridges, without the PCIe host bridge
	PHB                     // PCIe and a PCIe host bridge (typically the CPU)
	NODE                    // PCIe and the interconnect between PCIe host bridges of one NUMA node
	SYS                     // PCIe and the SMP interconnect between NUMA nodes (QPI/UPI, xGMI)
	NET                     // between nodes, through their NICs
)

var kindNames = [...]string{KindUnknown: "", Self: "X", NVLink: "NV", PIX: "PIX", PXB: "PXB", PHB: "PHB", NODE: "NODE", SYS: "SYS", NET: "NET"}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		if k == KindUnknown {
			return "unknown"
		}
		return kindNames[k]
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

// Class is the path between two devices: its kind and, for NVLink, the number of links
// bonded between the two GPUs (NV18 on H100 SXM through NVSwitch). A cost model attaches a
// latency and a bandwidth to a class. The zero Class is "unknown". Classes are comparable.
type Class struct {
	Kind  Kind
	Links int // NVLink only: links between the pair; 0 when NVML could not count them
}

// The classes without a link count, for convenience.
var (
	ClassSelf = Class{Kind: Self}
	ClassPIX  = Class{Kind: PIX}
	ClassPXB  = Class{Kind: PXB}
	ClassPHB  = Class{Kind: PHB}
	ClassNODE = Class{Kind: NODE}
	ClassSYS  = Class{Kind: SYS}
	ClassNET  = Class{Kind: NET}
)

// NV is the class of n bonded NVLinks (n 0: NVLink, count unknown).
func NV(n int) Class { return Class{Kind: NVLink, Links: n} }

// String is the class as nvidia-smi prints it: X, NV18, PIX, …, NET; "NV" for NVLink with
// an unknown link count, "" for the zero Class.
func (c Class) String() string {
	switch {
	case c.Kind == KindUnknown:
		return ""
	case c.Kind == NVLink && c.Links > 0:
		return "NV" + strconv.Itoa(c.Links)
	default:
		return c.Kind.String()
	}
}

// ParseClass reads a class as String writes it. The empty string is the zero Class.
func ParseClass(s string) (Class, error) {
	if s == "" {
		return Class{}, nil
	}
	for k, name := range kindNames {
		if k != int(KindUnknown) && s == name {
			return Class{Kind: Kind(k)}, nil
		}
	}
	if rest, ok := strings.CutPrefix(s, "NV"); ok {
		if n, err := strconv.Atoi(rest); err == nil && n > 0 && rest[0] != '+' && rest[0] != '0' {
			return NV(n), nil
		}
	}
	return Class{}, fmt.Errorf("unknown link class %q (want X, NV<n>, PIX, PXB, PHB, NODE, SYS or NET)", s)
}

// MarshalText writes String.
func (c Class) MarshalText() ([]byte, error) { return []byte(c.String()), nil }

// UnmarshalText reads ParseClass.
func (c *Class) UnmarshalText(b []byte) error {
	v, err := ParseClass(string(b))
	if err != nil {
		return err
	}
	*c = v
	return nil
}

// Legend explains the classes as nvidia-smi's legend does, NET added.
const Legend = `  X    = Self
  SYS  = Connection traversing PCIe as well as the SMP interconnect between NUMA nodes (e.g., QPI/UPI)
  NODE = Connection traversing PCIe as well as the interconnect between PCIe Host Bridges within a NUMA node
  PHB  = Connection traversing PCIe as well as a PCIe Host Bridge (typically the CPU)
  PXB  = Connection traversing multiple PCIe bridges (without traversing the PCIe Host Bridge)
  PIX  = Connection traversing at most a single PCIe bridge
  NV#  = Connection traversing a bonded set of # NVLinks
  NET  = Connection between nodes, through their NICs
`
