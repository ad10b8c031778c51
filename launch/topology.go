package launch

import (
	"fmt"
	"io"

	"github.com/moerun/moerun/topology"
)

// ShowTopology prints the topology that o asks for (launch --show-topology): the one in
// o.TopologyFile, or this machine's, as text (the nvidia-smi topo -m matrix, affinities,
// NICs) or as JSON. It returns the exit code: 0; ExitUsage when the file cannot be loaded
// (nothing was started: the input is wrong); 1 when the output cannot be written. A machine
// without GPUs is not an error: the printout says "no GPU found (why)".
func ShowTopology(o Options, stdout, stderr io.Writer) int {
	var t *topology.Topology
	var err error
	if o.TopologyFile != "" {
		if t, err = topology.Load(o.TopologyFile); err != nil {
			fmt.Fprintf(stderr, "launch: %v\n", err)
			return ExitUsage
		}
	} else if t, err = topology.Discover(); err != nil {
		fmt.Fprintf(stderr, "launch: %v\n", err)
		return 1
	}
	if o.JSON {
		var b []byte
		if b, err = t.JSON(); err == nil {
			_, err = stdout.Write(b)
		}
	} else {
		err = t.WriteText(stdout)
	}
	if err != nil {
		fmt.Fprintf(stderr, "launch: --show-topology: %v\n", err)
		return 1
	}
	return 0
}
