// Package topology describes the machines a job runs on: each GPU (index, UUID, name, PCI
// bus id, memory, NUMA node, CPU set), the class of every GPU pair as `nvidia-smi topo -m`
// names it (NV#, PIX, PXB, PHB, NODE, SYS), NUMA nodes, NICs, and for clusters the nodes
// and the network that joins them (NET). The same Topology is discovered on this machine
// (Discover: go-nvml, guarded so that a missing library or function never ends the
// process, and sysfs), loaded from and saved to JSON (Load, Parse, JSON), shipped for
// machines we do not have (Shipped), and printed for people (WriteText).
//
// It must not be on a hot path: discovery runs once, before a job.
package topology
