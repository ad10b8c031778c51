// Package benchreport compares one GPU benchmark run of moerun with PyTorch's, as
// bench/gpu.sh collects it into a results folder: our MoE layer against moe_ref.py's
// torch._grouped_mm layer, our collectives against coll_bench.py's torch.distributed ones,
// and our start-up against torchrun's. It writes the comparison as Markdown, as JSON and as
// PNG plots, and applies the project's performance targets to every row.
//
// The pieces: Load (input.go) reads a results folder, and the Parse* functions read one
// file each; Compare (compare.go) is pure: parsed inputs in, a Report out, with no clock,
// file or environment read; Markdown (markdown.go) and WritePlots (plot.go) render a
// Report; Main (cli.go) is bin/benchreport's command line. A missing input empties its
// section with a one-line reason; a malformed JSON file is an error naming the file.
//
// The results folder (every file optional; bench/gpu.sh writes them all):
//
//	moe-PRESET.json            bin/worker run --json, one per preset
//	moe-PRESET-chunkC.json     the same with --chunk C (one row, compared with the unchunked one)
//	moe_ref.txt                stdout of moe_ref.py: its "JSON {...}" lines
//	collectives.json           bin/worker collectives --json
//	coll_bench.txt             stdout of coll_bench.py
//	startup.json               {"moerun_s": S, "torch_s": S}, if given; else computed from:
//	startup-moerun-start.txt   unix time (date +%s.%N) just before bin/launch started
//	startup-moerun.json        bin/worker collectives --json of that launch (comms_ready_unix_s, ready_unix_s)
//	startup-moerun-end.txt     unix time after it exited (an upper bound, used when ready_unix_s is absent)
//	startup-torch-start.txt    unix time just before torchrun started bench/torch_startup.py
//	startup-torch.txt          its stdout: "READY <unix time>" after the first all_reduce
//	host.txt                   nvidia-smi -L and topo -m (its "GPU n:" lines head the report)
//
// It must not import the runtime's packages (comm, moe, worker): it reads their JSON by
// field name, so that it builds and tests while those change, and runs on any machine.
package benchreport
