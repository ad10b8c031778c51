package launch

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moerun/moerun/topology"
)

func TestParseShowTopology(t *testing.T) {
	cases := []struct {
		args string
		want Options
	}{
		{"--show-topology", Options{ShowTopology: true}},
		{"-show-topology --json", Options{ShowTopology: true, JSON: true}},
		{"--show-topology --topology-file dgx-h100", Options{ShowTopology: true, TopologyFile: "dgx-h100"}},
		{"--topology-file=x.json --json --show-topology", Options{ShowTopology: true, TopologyFile: "x.json", JSON: true}},
	}
	for _, tc := range cases {
		t.Run(tc.args, func(t *testing.T) {
			var out, errOut bytes.Buffer
			got, help, err := Parse(append([]string{"launch"}, strings.Fields(tc.args)...), &out, &errOut)
			if err != nil || help || fmt.Sprintf("%+v", got) != fmt.Sprintf("%+v", tc.want) {
				t.Errorf("Parse = %+v, help %v, err %v; want %+v", got, help, err, tc.want)
			}
		})
	}
}

// TestMainShowTopology covers launch --show-topology: what it prints, what it refuses.
func TestMainShowTopology(t *testing.T) {
	dgx, err := topology.Load("dgx-h100")
	if err != nil {
		t.Fatal(err)
	}
	var text bytes.Buffer
	if err := dgx.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	json, err := dgx.JSON()
	if err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(t.TempDir(), "bad.json")
	if err := os.WriteFile(bad, []byte(`{"nodes": []}`), 0o666); err != nil {
		t.Fatal(err)
	}
	topo := " (usage: " + topologyUsage + ")\n"
	cases := []struct {
		args         string
		code         int
		stdout       string
		stderrPrefix string
	}{
		{"--show-topology --topology-file dgx-h100", 0, text.String(), ""},
		{"--show-topology --topology-file dgx-h100 --json", 0, string(json), ""},
		{"--show-topology --topology-file " + bad, ExitUsage, "", "launch: " + bad + ": no nodes\n"},
		{"--show-topology --topology-file dgx-h1000", ExitUsage, "", "launch: dgx-h1000: no such file, and no shipped topology of that name"},
		{"--show-topology -np 2", ExitUsage, "", "launch: --show-topology starts no job: drop -np" + topo},
		{"--show-topology --timeout 5s", ExitUsage, "", "launch: --show-topology starts no job: drop -timeout" + topo},
		{"--show-topology prog", ExitUsage, "", `launch: --show-topology starts no job: drop PROGRAM "prog"` + topo},
		{"--json -np 2 prog", ExitUsage, "", "launch: --json goes with --show-topology" + topo},
		{"--show-topology --bind core", ExitUsage, "", "launch: --show-topology starts no job: drop -bind" + topo},
	}
	for _, tc := range cases {
		t.Run(tc.args, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := Main(append([]string{"launch"}, strings.Fields(tc.args)...), &out, &errOut)
			if code != tc.code || out.String() != tc.stdout || !strings.HasPrefix(errOut.String(), tc.stderrPrefix) ||
				tc.stderrPrefix == "" && errOut.Len() > 0 {
				t.Errorf("Main = %d, stdout %q, stderr %q; want %d, stderr starting %q", code, out.String(), errOut.String(), tc.code, tc.stderrPrefix)
			}
		})
	}
}

// TestMainShowTopologyHere discovers this machine: whatever it has, exit 0, and a machine
// without a GPU says why in one line.
func TestMainShowTopologyHere(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := Main([]string{"launch", "--show-topology"}, &out, &errOut); code != 0 || errOut.Len() > 0 {
		t.Fatalf("Main = %d, stderr %q", code, errOut.String())
	}
	if !strings.Contains(out.String(), "GPU0 ") && !strings.Contains(out.String(), "\nno GPU found (") {
		t.Errorf("neither a matrix nor a reason:\n%s", out.String())
	}
	if !strings.Contains(out.String(), "\nNUMA node 0: CPUs ") {
		t.Errorf("no NUMA node:\n%s", out.String())
	}
}
