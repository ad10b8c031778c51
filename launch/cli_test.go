package launch

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/moerun/moerun/rank"
	rv "github.com/moerun/moerun/rendezvous"
)

func TestParse(t *testing.T) {
	def := Options{NP: 2, TP: 1, PCP: 1, PP: 1, Timeout: 120 * time.Second, Grace: 2 * time.Second, Program: "prog", Bind: BindNUMA, GPUOrder: OrderAuto}
	with := func(f func(*Options)) Options {
		o := def
		o.Args = []string{}
		f(&o)
		return o
	}
	cases := []struct {
		args string
		want Options
	}{
		{"-np 2 prog", with(func(o *Options) {})},
		{"--np 2 prog", with(func(o *Options) {})},
		{"-np=2 prog", with(func(o *Options) {})},
		{"--np=2 prog", with(func(o *Options) {})},
		{"-np 2 prog --json x -np 9", with(func(o *Options) { o.Args = []string{"--json", "x", "-np", "9"} })},
		{"-np 2 -- prog --tp 3", with(func(o *Options) { o.Args = []string{"--tp", "3"} })},
		{"-np 2 prog -- x", with(func(o *Options) { o.Args = []string{"--", "x"} })},
		{"-np 2 -- prog -- x", with(func(o *Options) { o.Args = []string{"--", "x"} })},
		{"-np 2 prog -h --help", with(func(o *Options) { o.Args = []string{"-h", "--help"} })},
		{"-np 2 -- -odd", with(func(o *Options) { o.Program = "-odd" })},
		{"-np 2 help", with(func(o *Options) { o.Program = "help" })},
		{"-np 8 --tp 2 --dp 4 --ep --pcp 1 --pp 1 prog", with(func(o *Options) { o.NP, o.TP, o.DP, o.EP = 8, 2, 4, true })},
		{"-np 2 -tp 2 -ep prog", with(func(o *Options) { o.TP, o.EP = 2, true })},
		{"--timeout 5s --grace=100ms -np 2 prog a", with(func(o *Options) {
			o.Timeout, o.Grace, o.Args = 5*time.Second, 100*time.Millisecond, []string{"a"}
		})},
		{"-np 2 --bind core --gpu-order o.json --report-bindings --topology-file pcie-8gpu prog", with(func(o *Options) {
			o.Bind, o.GPUOrder, o.ReportBindings, o.TopologyFile = BindCore, "o.json", true, "pcie-8gpu"
		})},
		{"-np 2 --bind=none --gpu-order=identity prog", with(func(o *Options) { o.Bind, o.GPUOrder = BindNone, OrderIdentity })},
	}
	for _, tc := range cases {
		t.Run(tc.args, func(t *testing.T) {
			var out, errOut bytes.Buffer
			got, help, err := Parse(append([]string{"launch"}, strings.Fields(tc.args)...), &out, &errOut)
			if err != nil || help {
				t.Fatalf("Parse: help %v, err %v (stderr %q)", help, err, errOut.String())
			}
			if fmt.Sprintf("%+v", got) != fmt.Sprintf("%+v", tc.want) {
				t.Errorf("Parse =\n %+v\nwant\n %+v", got, tc.want)
			}
			if out.Len()+errOut.Len() > 0 {
				t.Errorf("Parse printed %q %q", out.String(), errOut.String())
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	cases := []struct{ args, want string }{
		{"", "-np is required"},
		{"-np 2", "missing PROGRAM"},
		{"-np 2 --", "missing PROGRAM"},
		{"prog", "-np is required"},
		{"-np 0 prog", "-np 0: need at least one rank"},
		{"-np -1 prog", "-np -1: need at least one rank"},
		{"-np two prog", `invalid value "two" for flag -np`},
		{"-np", "flag needs an argument: -np"},
		{"-np 2 --bogus prog", "flag provided but not defined: -bogus"},
		{"-np 2 --grace -1s prog", "--grace -1s is negative"},
		{"-np 2 --timeout 0s prog", "--timeout 0s: must be positive"},
		{"-np 2 --bind socket prog", `--bind "socket": expected numa, core or none`},
		{"-np 2 --gpu-order= prog", "--gpu-order: expected auto, identity or a JSON file"},
	}
	for _, tc := range cases {
		t.Run(tc.args, func(t *testing.T) {
			var out, errOut bytes.Buffer
			_, _, err := Parse(append([]string{"launch"}, strings.Fields(tc.args)...), &out, &errOut)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Parse error = %v, want one containing %q", err, tc.want)
			}
			if out.Len()+errOut.Len() > 0 {
				t.Errorf("Parse printed %q %q; Main prints the one line", out.String(), errOut.String())
			}
		})
	}
}

func TestParseHelp(t *testing.T) {
	for _, h := range []string{"-h", "--help"} {
		var out, errOut bytes.Buffer
		_, help, err := Parse([]string{"launch", h}, &out, &errOut)
		if err != nil || !help || !strings.Contains(out.String(), usageText) {
			t.Errorf("Parse(%s) = help %v, err %v, stdout %q", h, help, err, out.String())
		}
	}
}

// TestMainRefusesBeforeStarting covers the paths of Main that must not start anything.
func TestMainRefusesBeforeStarting(t *testing.T) {
	cases := []struct {
		args   string
		code   int
		stderr string
	}{
		{"-np 3 --tp 2 true", ExitUsage, "launch: np 3 is not a multiple of tp·pcp·pp = 2\n"},
		{"-np 4 --tp 2 --dp 3 true", ExitUsage, "launch: np 4 does not match dp·pp·pcp·tp = 3·1·1·2 = 6\n"},
		{"-np 2", ExitUsage, "launch: missing PROGRAM (usage: " + usageText + ")\n"},
		{"-np 0 true", ExitUsage, "launch: -np 0: need at least one rank (usage: " + usageText + ")\n"},
		{"-np 2 moerun-no-such-program", ExitNotFound, "launch: exec: \"moerun-no-such-program\": executable file not found in $PATH\n"},
	}
	for _, tc := range cases {
		t.Run(tc.args, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := Main(append([]string{"launch"}, strings.Fields(tc.args)...), &out, &errOut)
			if code != tc.code || errOut.String() != tc.stderr || out.Len() != 0 {
				t.Errorf("Main = %d, stdout %q, stderr %q; want %d, stderr %q", code, out.String(), errOut.String(), tc.code, tc.stderr)
			}
		})
	}
}

func TestRunContextCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	var out, errOut bytes.Buffer
	code := Run(ctx, Options{NP: 2, TP: 1, PCP: 1, PP: 1, Grace: time.Second, Program: "sleep", Args: []string{"60"}}, &out, &errOut)
	if code != 143 || !strings.HasPrefix(errOut.String(), "launch: context canceled; stopping ranks 0, 1\n") {
		t.Errorf("Run with a cancelled context = %d, stderr %q", code, errOut.String())
	}
}

func TestWorkerEnv(t *testing.T) {
	l, err := rank.NewLayout(8, 2, 1, 1, 0, true)
	if err != nil {
		t.Fatal(err)
	}
	j := jobEnv{layout: l, storeHost: "127.0.0.1", storePort: 4242, token: "tok", peerTimeout: 90 * time.Second, heartbeat: time.Second}
	base := []string{"PATH=/bin", "RANK=99", "MOERUN_TP=7", "FOO=a=b", "MOERUN_HEARTBEAT=5s"}
	got := workerEnv(base, j, 5)
	want := []string{
		"PATH=/bin", "FOO=a=b",
		"RANK=5", "WORLD_SIZE=8", "LOCAL_RANK=5", "LOCAL_WORLD_SIZE=8",
		"MASTER_ADDR=127.0.0.1", "MASTER_PORT=4242", "MOERUN_TOKEN=tok",
		"MOERUN_TP=2", "MOERUN_DP=4", "MOERUN_PCP=1", "MOERUN_PP=1", "MOERUN_EP=1",
		"MOERUN_TIMEOUT=1m30s", "MOERUN_HEARTBEAT=1s", "NCCL_NVLS_ENABLE=0",
	}
	if !slices.Equal(got, want) {
		t.Errorf("workerEnv =\n %q\nwant\n %q", got, want)
	}
	if !slices.Equal(base, []string{"PATH=/bin", "RANK=99", "MOERUN_TP=7", "FOO=a=b", "MOERUN_HEARTBEAT=5s"}) {
		t.Errorf("workerEnv modified its base: %q", base)
	}

	// The user's NCCL_NVLS_ENABLE wins, whatever its value.
	for _, v := range []string{"1", "0", ""} {
		got := workerEnv([]string{rv.EnvNCCLNVLS + "=" + v}, j, 0)
		var vals []string
		for _, kv := range got {
			if k, val, _ := strings.Cut(kv, "="); k == rv.EnvNCCLNVLS {
				vals = append(vals, val)
			}
		}
		if !slices.Equal(vals, []string{v}) {
			t.Errorf("user sets %s=%q: worker gets %q", rv.EnvNCCLNVLS, v, vals)
		}
	}

	// The job's GPUs replace the user's CUDA_VISIBLE_DEVICES and CUDA_DEVICE_ORDER; without
	// them both stay as they are.
	cuda := []string{"CUDA_VISIBLE_DEVICES=3", "CUDA_DEVICE_ORDER=FASTEST_FIRST"}
	j.gpus = "0,4,1,5"
	got = workerEnv(cuda, j, 2)
	if !slices.Contains(got, "CUDA_VISIBLE_DEVICES=0,4,1,5") || !slices.Contains(got, "CUDA_DEVICE_ORDER=PCI_BUS_ID") ||
		slices.Contains(got, cuda[0]) || slices.Contains(got, cuda[1]) || !slices.Contains(got, "LOCAL_RANK=2") {
		t.Errorf("workerEnv with GPUs = %q", got)
	}
	j.gpus = ""
	if got = workerEnv(cuda, j, 2); !slices.Contains(got, cuda[0]) || !slices.Contains(got, cuda[1]) {
		t.Errorf("workerEnv without GPUs = %q", got)
	}

	l, _ = rank.NewLayout(2, 1, 1, 1, 0, false)
	got = workerEnv(nil, jobEnv{layout: l, peerTimeout: 120 * time.Second}, 1)
	if !slices.Contains(got, "MOERUN_EP=0") || !slices.Contains(got, "MOERUN_TIMEOUT=2m0s") || !slices.Contains(got, "MOERUN_DP=2") ||
		slices.ContainsFunc(got, func(kv string) bool { return strings.HasPrefix(kv, "MOERUN_HEARTBEAT=") }) {
		t.Errorf("workerEnv = %q", got)
	}
}
