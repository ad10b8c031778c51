package topology

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func sortedKeys[V any](m map[string]V) []string {
	var k []string
	for name := range m {
		k = append(k, name)
	}
	slices.Sort(k)
	return k
}

// TestRoundTrip loads every shipped file, saves it, loads the copy, and wants the same
// Topology and the same bytes.
func TestRoundTrip(t *testing.T) {
	for _, name := range Shipped() {
		t.Run(name, func(t *testing.T) {
			top, err := Load(name)
			if err != nil {
				t.Fatal(err)
			}
			file := filepath.Join(t.TempDir(), name+".json")
			if err := top.Save(file); err != nil {
				t.Fatal(err)
			}
			again, err := Load(file)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(top, again) {
				t.Errorf("%s changed on a round trip through JSON", name)
			}
			orig, _ := shipped.ReadFile("files/" + name + ".json")
			saved, _ := os.ReadFile(file)
			if !bytes.Equal(orig, saved) {
				t.Errorf("%s: saved bytes differ from the shipped file", name)
			}
		})
	}
}

// TestShippedShapes checks what the issue asks of each shipped machine.
func TestShippedShapes(t *testing.T) {
	load := func(name string) *Topology {
		top, err := Load(name)
		if err != nil {
			t.Fatal(err)
		}
		return top
	}
	dgx := load("dgx-h100")
	if dgx.NumGPUs() != 8 || dgx.NumNodes() != 1 || len(dgx.MachineOf(0).NUMA) != 2 || len(dgx.MachineOf(0).NICs) != 8 {
		t.Errorf("dgx-h100: %d GPUs, %d nodes, %d NUMA nodes, %d NICs", dgx.NumGPUs(), dgx.NumNodes(), len(dgx.MachineOf(0).NUMA), len(dgx.MachineOf(0).NICs))
	}
	for i := range 8 {
		if g := dgx.GPU(i); g.NUMANode != i/4 {
			t.Errorf("dgx-h100 GPU%d on NUMA node %d", i, g.NUMANode)
		}
		for j := range 8 {
			if c := dgx.Link(i, j); i != j && c != NV(18) || i == j && c != ClassSelf {
				t.Errorf("dgx-h100 GPU%d-GPU%d = %v", i, j, c)
			}
		}
	}
	cpus, err := dgx.MachineOf(0).NUMA[1].CPUs.CPUs()
	if err != nil || len(cpus) != 112 {
		t.Errorf("dgx-h100 NUMA node 1: %d CPUs, %v", len(cpus), err)
	}
	pcie := load("pcie-8gpu")
	for _, tc := range []struct {
		i, j int
		want Class
	}{{0, 1, ClassPIX}, {2, 3, ClassPIX}, {0, 2, ClassNODE}, {1, 3, ClassNODE}, {3, 4, ClassSYS}, {0, 7, ClassSYS}, {6, 7, ClassPIX}, {5, 7, ClassNODE}} {
		if got := pcie.Link(tc.i, tc.j); got != tc.want {
			t.Errorf("pcie-8gpu GPU%d-GPU%d = %v, want %v", tc.i, tc.j, got, tc.want)
		}
	}
	for _, tc := range []struct {
		name  string
		nodes int
	}{{"cluster-2x-dgx-h100", 2}, {"cluster-64x-dgx-h100", 64}} {
		c := load(tc.name)
		if c.NumNodes() != tc.nodes || c.NumGPUs() != 8*tc.nodes || c.Network == nil {
			t.Errorf("%s: %d nodes, %d GPUs, network %v", tc.name, c.NumNodes(), c.NumGPUs(), c.Network)
		}
		last := c.NumGPUs() - 1
		if n, l := c.Locate(last); n != tc.nodes-1 || l != 7 {
			t.Errorf("%s: Locate(%d) = %d, %d", tc.name, last, n, l)
		}
		if c.Link(0, 7) != NV(18) || c.Link(7, 8) != ClassNET || c.Link(last, last-1) != NV(18) || c.Link(last, last) != ClassSelf {
			t.Errorf("%s: links 0-7 %v, 7-8 %v", tc.name, c.Link(0, 7), c.Link(7, 8))
		}
	}
}

// A small valid topology for the error cases: 2 GPUs over PCIe, a NIC.
const small = `{
  "machines": {
    "m": {
      "numa": [{"id": 0, "cpus": "0-7"}],
      "gpus": [
        {"index": 0, "name": "G", "numa_node": 0, "cpus": "0-7"},
        {"index": 1, "name": "G", "numa_node": 0, "cpus": "0-7"}
      ],
      "links": [["X", "PIX"], ["PIX", "X"]],
      "nics": [{"name": "eth0", "numa_node": 0, "gbps": 100, "gpus": ["PIX", "PIX"]}]
    }
  },
  "nodes": [{"name": "a", "machine": "m"}]
}`

func TestParseErrors(t *testing.T) {
	if _, err := Parse([]byte(small)); err != nil {
		t.Fatalf("the base case does not parse: %v", err)
	}
	cases := []struct {
		name, from, to, want string
	}{
		{"asymmetric", `[["X", "PIX"], ["PIX", "X"]]`, `[["X", "PIX"], ["NV4", "X"]]`,
			`machine "m": links: GPU0-GPU1 is PIX but GPU1-GPU0 is NV4`},
		{"missing class", `[["X", "PIX"], ["PIX", "X"]]`, `[["X", ""], ["PIX", "X"]]`,
			`machine "m": links: GPU0-GPU1 has no class`},
		{"short row", `[["X", "PIX"], ["PIX", "X"]]`, `[["X", "PIX"], ["PIX"]]`,
			`machine "m": links: row GPU1 has 1 classes for 2 GPUs`},
		{"missing row", `[["X", "PIX"], ["PIX", "X"]]`, `[["X", "PIX"]]`,
			`machine "m": links: 1 rows for 2 GPUs`},
		{"diagonal", `[["X", "PIX"], ["PIX", "X"]]`, `[["PIX", "PIX"], ["PIX", "X"]]`,
			`machine "m": links: GPU0-GPU0 is PIX, want X`},
		{"NET inside a node", `[["X", "PIX"], ["PIX", "X"]]`, `[["X", "NET"], ["NET", "X"]]`,
			`machine "m": links: GPU0-GPU1 is NET, which is for GPUs of different nodes`},
		{"unknown class", `"PIX", "X"]]`, `"NV0", "X"]]`,
			`unknown link class "NV0" (want X, NV<n>, PIX, PXB, PHB, NODE, SYS or NET)`},
		{"bad GPU CPU list", `"numa_node": 0, "cpus": "0-7"},
        {"index": 1`, `"numa_node": 0, "cpus": "0-x"},
        {"index": 1`,
			`machine "m": GPU0: cpus "0-x": bad CPU number "x"`},
		{"backwards CPU range", `[{"id": 0, "cpus": "0-7"}]`, `[{"id": 0, "cpus": "7-0"}]`,
			`machine "m": NUMA node 0: cpus "7-0": range "7-0" runs backwards`},
		{"NUMA node not listed", `{"index": 1, "name": "G", "numa_node": 0`, `{"index": 1, "name": "G", "numa_node": 1`,
			`machine "m": GPU1: NUMA node 1 is not in numa`},
		{"index", `{"index": 1,`, `{"index": 2,`, `machine "m": GPU at position 1 has index 2`},
		{"NIC classes", `"gpus": ["PIX", "PIX"]`, `"gpus": ["PIX"]`, `machine "m": NIC eth0: 1 GPU classes for 2 GPUs`},
		{"NIC over NVLink", `"gpus": ["PIX", "PIX"]`, `"gpus": ["PIX", "NV2"]`,
			`machine "m": NIC eth0: GPU1 is NV2; a NIC reaches a GPU through PCIe (PIX, PXB, PHB, NODE or SYS)`},
		{"unknown machine", `"machine": "m"}]`, `"machine": "n"}]`, `node "a": machine "n" is not in machines`},
		{"no network", `[{"name": "a", "machine": "m"}]`, `[{"name": "a", "machine": "m"}, {"name": "b", "machine": "m"}]`,
			`2 nodes but no network joins them`},
		{"same node twice", `[{"name": "a", "machine": "m"}]`, `[{"name": "a", "machine": "m"}, {"name": "a", "machine": "m"}], "network": {"fabric": "roce"}`,
			`nodes 0 and 1 are both named "a"`},
		{"unknown field", `"gbps": 100`, `"gbs": 100`, `json: unknown field "gbs"`},
		{"type", `"gbps": 100`, `"gbps": "fast"`, `line 10: json: cannot unmarshal string into Go struct field NIC.machines.nics.gbps of type float64`},
		{"syntax", `"nodes": [`, `"nodes": [,`, `line 13: invalid character ',' looking for beginning of value`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if strings.Count(small, tc.from) != 1 {
				t.Fatalf("%q is not in the base case once", tc.from)
			}
			_, err := Parse([]byte(strings.Replace(small, tc.from, tc.to, 1)))
			if err == nil || err.Error() != tc.want {
				t.Errorf("Parse error = %v\nwant %s", err, tc.want)
			}
		})
	}
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(bad, []byte(strings.Replace(small, `["PIX", "X"]]`, `["SYS", "X"]]`, 1)), 0o666); err != nil {
		t.Fatal(err)
	}
	cases := []struct{ file, want string }{
		{bad, bad + `: machine "m": links: GPU0-GPU1 is PIX but GPU1-GPU0 is SYS`},
		{"dgx-h10", "dgx-h10: no such file, and no shipped topology of that name (shipped: " + strings.Join(Shipped(), ", ") + ")"},
		{filepath.Join(dir, "none.json"), "open " + filepath.Join(dir, "none.json") + ": no such file or directory"},
	}
	for _, tc := range cases {
		if _, err := Load(tc.file); err == nil || err.Error() != tc.want {
			t.Errorf("Load(%s) error = %v\nwant %s", tc.file, err, tc.want)
		}
	}
}

func TestClass(t *testing.T) {
	for _, s := range []string{"X", "NV1", "NV18", "NV", "PIX", "PXB", "PHB", "NODE", "SYS", "NET", ""} {
		c, err := ParseClass(s)
		if err != nil || c.String() != s {
			t.Errorf("ParseClass(%q) = %v, %v; String %q", s, c, err, c.String())
		}
	}
	for _, s := range []string{"NV0", "NV-1", "NV+2", "NV02", "nv18", "x", "PCI", "NVx"} {
		if c, err := ParseClass(s); err == nil {
			t.Errorf("ParseClass(%q) = %v, want an error", s, c)
		}
	}
	if NV(18).Kind >= ClassPIX.Kind || ClassSYS.Kind >= ClassNET.Kind {
		t.Error("kinds are not ordered from near to far")
	}
}

func TestCPUList(t *testing.T) {
	cases := []struct {
		in   CPUList
		want []int
		out  CPUList
	}{
		{"", nil, ""},
		{"0", []int{0}, "0"},
		{"0-3,8", []int{0, 1, 2, 3, 8}, "0-3,8"},
		{"8,0-3,2", []int{0, 1, 2, 3, 8}, "0-3,8"},
		{" 0-1,4-5\n", []int{0, 1, 4, 5}, "0-1,4-5"},
	}
	for _, tc := range cases {
		got, err := tc.in.CPUs()
		if err != nil || !slices.Equal(got, tc.want) || FormatCPUs(got) != tc.out {
			t.Errorf("%q: CPUs = %v, %v; format %q", tc.in, got, err, FormatCPUs(got))
		}
	}
	for _, tc := range []struct{ in, want string }{
		{"a", `bad CPU number "a"`}, {"1-", `bad CPU number ""`}, {"3-1", `range "3-1" runs backwards`},
		{"0,,1", `bad CPU number ""`}, {"-1", `bad CPU number ""`}, {"+1", `bad CPU number "+1"`}, {"70000", "CPU 70000 is beyond 65535"},
	} {
		if _, err := CPUList(tc.in).CPUs(); err == nil || err.Error() != tc.want {
			t.Errorf("%q: error %v, want %s", tc.in, err, tc.want)
		}
	}
}

func TestJoinFlat(t *testing.T) {
	in := map[string]any{
		"a": []string{"x]", `y"}`},
		"b": []any{map[string]any{"c": []int{1, 2}, "d": "e: f, g"}, map[string]any{"h": []any{}}},
		"i": map[string]any{"j": 1, "k": "{"},
	}
	b, err := json.MarshalIndent(in, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	want := `{
  "a": ["x]", "y\"}"],
  "b": [
    {
      "c": [1, 2],
      "d": "e: f, g"
    },
    {
      "h": []
    }
  ],
  "i": {"j": 1, "k": "{"}
}`
	got := joinFlat(b)
	if string(got) != want {
		t.Errorf("joinFlat =\n%s\nwant\n%s", got, want)
	}
	var back any
	if err := json.Unmarshal(got, &back); err != nil || !reflect.DeepEqual(back, mustRoundTrip(t, in)) {
		t.Errorf("joinFlat changed the value: %v, %v", back, err)
	}
}

func mustRoundTrip(t *testing.T, v any) any {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var back any
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	return back
}
