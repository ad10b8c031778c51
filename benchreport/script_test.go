package benchreport

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The tests of bench/gpu.sh run it in a copy of the tree with stand-ins for the binaries,
// python3 and nvidia-smi; they need bash 5 (EPOCHREALTIME) and coreutils' timeout.

const script = "../bench/gpu.sh"

func needBash(t *testing.T) string {
	t.Helper()
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash")
	}
	if _, err := exec.LookPath("timeout"); err != nil {
		t.Skip("no timeout (coreutils)")
	}
	return bash
}

func TestScriptSyntax(t *testing.T) {
	bash := needBash(t)
	if out, err := exec.Command(bash, "-n", script).CombinedOutput(); err != nil {
		t.Fatalf("bash -n %s: %v\n%s", script, err, out)
	}
}

// stub is every stand-in: it logs its name and arguments, writes a JSON file after
// --json, prints a READY line for torch_startup.py, and fails when its arguments contain
// $FAIL_ON.
const stub = `#!/usr/bin/env bash
echo "$(basename "$0") $*" >>"$CALLS"
prev=
for a in "$@"; do
  [[ $prev == --json ]] && echo '{"rows": [], "results": []}' >"$a"
  prev=$a
done
[[ "$*" == *torch_startup.py* ]] && echo "READY 1764065417.5"
if [[ -n ${FAIL_ON:-} && "$*" == *"$FAIL_ON"* ]]; then
  echo "stub: failing on $FAIL_ON as asked" >&2
  exit 3
fi
exit 0
`

// scriptTree copies bench/gpu.sh into a fresh tree and returns the tree, the stubs' folder
// (for PATH) and the log of their calls. withBin and withBench add bin/ and .gpu/bench.
func scriptTree(t *testing.T, withBin, withBench bool) (root, stubs, calls string) {
	t.Helper()
	root = t.TempDir()
	data, err := os.ReadFile(script)
	if err != nil {
		t.Fatal(err)
	}
	write := func(path, data string, mode os.FileMode) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(data), mode); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(root, "bench", "gpu.sh"), string(data), 0o755)
	stubs = filepath.Join(root, "stubs")
	for _, name := range []string{"python3", "nvidia-smi"} {
		write(filepath.Join(stubs, name), stub, 0o755)
	}
	if withBin {
		for _, name := range []string{"launch", "worker", "benchreport"} {
			write(filepath.Join(root, "bin", name), stub, 0o755)
		}
	}
	if withBench {
		write(filepath.Join(root, ".gpu", "bench", "moe_ref.py"), "", 0o644)
		write(filepath.Join(root, ".gpu", "bench", "coll_bench.py"), "", 0o644)
	}
	return root, stubs, filepath.Join(root, "calls.txt")
}

func runScript(t *testing.T, root, stubs, calls string, env ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(needBash(t), filepath.Join(root, "bench", "gpu.sh"), filepath.Join(root, "out"))
	cmd.Dir = t.TempDir() // the script finds its tree by its own path
	cmd.Env = append(os.Environ(), "PATH="+stubs+string(os.PathListSeparator)+os.Getenv("PATH"), "CALLS="+calls)
	cmd.Env = append(cmd.Env, env...)
	out, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return code, string(out)
}

func TestScriptPrerequisites(t *testing.T) {
	for _, tc := range []struct {
		name       string
		bin, bench bool
		env        []string
		want       string
	}{
		{"no bin", false, true, nil,
			"bench/gpu.sh: bin/launch bin/worker bin/benchreport missing: run 'make build' on a machine with Go and carry bin/ to this host\n"},
		{"no .gpu/bench", true, false, nil,
			"bench/gpu.sh: .gpu/bench/moe_ref.py missing: run 'mkdir -p .gpu && cp -r ../shared/bench .gpu/' before carrying the tree here\n"},
		{"NVLS on", true, true, []string{"NCCL_NVLS_ENABLE=1"}, "bench/gpu.sh: NCCL_NVLS_ENABLE=1: expected 0 on these hosts\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root, stubs, calls := scriptTree(t, tc.bin, tc.bench)
			code, out := runScript(t, root, stubs, calls, tc.env...)
			if code != 1 || out != tc.want {
				t.Errorf("exit %d, output %q; want 1 and %q", code, out, tc.want)
			}
			if _, err := os.Stat(calls); err == nil {
				t.Error("something ran")
			}
		})
	}
}

func TestScriptSteps(t *testing.T) {
	root, stubs, calls := scriptTree(t, true, true)
	// A file of an earlier run must not stand in for one this run fails to write.
	stale := filepath.Join(root, "out", "moe-deepseek-v3.json")
	if err := os.MkdirAll(filepath.Dir(stale), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(stale, []byte(`{"preset": "deepseek-v3", "rows": []}`), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out := runScript(t, root, stubs, calls, "PRESETS=mixtral qwen3-30b-a3b", "TOKENS=1,4096", "FAIL_ON=coll_bench.py")
	if code != 1 {
		t.Errorf("exit %d, want 1 (coll_bench failed)\n%s", code, out)
	}
	for _, want := range []string{
		"s] host                   ok (",
		"s] startup-moerun         ok (",
		"s] coll_bench             FAILED (exit status 3, ",
		"    stub: failing on coll_bench.py as asked\n",
		"s] moe-qwen3-30b-a3b-chunk256 ok (",
		"s] benchreport            ok (",
		"bench/gpu.sh: 1 step(s) failed: coll_bench (logs in " + filepath.Join(root, "out") + ")\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	log, err := os.ReadFile(calls)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"launch -np 2 bin/worker --backend nccl --log-level info collectives -b 8K -e 8K -f 2 --ops all_reduce -d bf16 -n 1 -w 0 --json " + filepath.Join(root, "out", "startup-moerun.json"),
		"python3 -m torch.distributed.run --nproc-per-node 2 bench/torch_startup.py",
		"launch -np 2 bin/worker --backend nccl collectives -b 8K -e 1G -f 2 -d bf16 -n 50 -w 5 --json",
		"launch -np 2 --dp 2 --ep bin/worker --backend nccl run --preset mixtral --match-ref --tokens 1,4096 --iters 20 --warmup 3 --json " + filepath.Join(root, "out", "moe-mixtral.json"),
		"--preset qwen3-30b-a3b --match-ref --chunk 256 --tokens 4096 --iters 20 --warmup 3 --json " + filepath.Join(root, "out", "moe-qwen3-30b-a3b-chunk256.json"),
		"python3 -m torch.distributed.run --nproc-per-node 2 .gpu/bench/moe_ref.py --configs mixtral,qwen3-30b-a3b --tokens 1,4096",
		"benchreport --results " + filepath.Join(root, "out"),
	} {
		if !strings.Contains(string(log), want) {
			t.Errorf("no call %q in\n%s", want, log)
		}
	}
	for _, f := range []string{"host.txt", "startup-moerun-start.txt", "startup-moerun-end.txt", "startup-torch-start.txt", "startup-torch.txt", "coll_bench.log"} {
		if _, err := os.Stat(filepath.Join(root, "out", f)); err != nil {
			t.Error(err)
		}
	}
	// The start-up files are what Load reads.
	in, err := Load(filepath.Join(root, "out"))
	if err != nil {
		t.Fatal(err)
	}
	if in.Startup.TorchS == nil || !strings.Contains(in.Startup.TorchHow, "READY") {
		t.Errorf("startup %+v, missing %v", in.Startup, in.Missing)
	}
	if _, err := os.Stat(stale); err == nil || len(in.MoE) != 4 {
		t.Errorf("%d MoE files; the earlier run's %s was kept", len(in.MoE), stale)
	}

	// Without 4096 tokens per rank there is no chunked row to compare.
	os.Remove(calls)
	if code, out := runScript(t, root, stubs, calls, "PRESETS=mixtral", "TOKENS=1,16"); code != 0 || strings.Contains(out, "chunk256") {
		t.Errorf("exit %d:\n%s", code, out)
	}
}

// TestScriptBudget: a spent budget skips the steps (benchreport still runs) and fails.
func TestScriptBudget(t *testing.T) {
	root, stubs, calls := scriptTree(t, true, true)
	code, out := runScript(t, root, stubs, calls, "BUDGET_S=25", "PRESETS=mixtral")
	if code != 1 || !strings.Contains(out, "s] moe_ref                SKIPPED: the 25s budget is spent\n") || !strings.Contains(out, "s] benchreport            ok (") {
		t.Errorf("exit %d:\n%s", code, out)
	}
}
