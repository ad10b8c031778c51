package benchreport

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/moerun/moerun/internal/jsonpos"
)

// File names in a results folder (see the package doc).
const (
	FileMoERef         = "moe_ref.txt"
	FileCollectives    = "collectives.json"
	FileCollBench      = "coll_bench.txt"
	FileStartup        = "startup.json"
	FileMoerunStart    = "startup-moerun-start.txt"
	FileMoerunStartup  = "startup-moerun.json"
	FileMoerunEnd      = "startup-moerun-end.txt"
	FileTorchStart     = "startup-torch-start.txt"
	FileTorchStartup   = "startup-torch.txt"
	FileHost           = "host.txt"
	FileMarkdown       = "comparison.md"
	FileJSON           = "comparison.json"
	FileCollectivesPNG = "collectives.png"
)

// MoERun is one file of `bin/worker run --json`. Fields the worker does not write yet
// read as zero.
type MoERun struct {
	File       string   `json:"-"`
	Preset     string   `json:"preset"`
	MatchRef   bool     `json:"match_ref"`
	Layer      MoELayer `json:"layer"`
	Layout     string   `json:"layout"`
	Backend    string   `json:"backend"`
	Device     string   `json:"device"`
	Iterations int      `json:"iterations"`
	Rows       []MoERow `json:"rows"`
	// ChunkRows is C of a moe-PRESET-chunkC.json file, 0 for the others.
	ChunkRows int `json:"-"`
}

// MoELayer is the part of the layer config the report names.
type MoELayer struct {
	Name         string `json:"name"`
	Hidden       int    `json:"hidden_size"`
	Intermediate int    `json:"moe_intermediate_size"`
	Experts      int    `json:"num_experts"`
	TopK         int    `json:"num_experts_per_tok"`
	Chunk        int    `json:"chunk_size"`
}

// MoERow is one row (one token count) of a run.
type MoERow struct {
	Tokens             []int   `json:"tokens_per_dp_rank"`
	Chunks             int     `json:"chunks"`
	Overlapped         bool    `json:"overlapped"` // each chunk's experts ran beside the collectives
	MsMedian           float64 `json:"ms_median"`
	MsMin              float64 `json:"ms_min"`
	MsMax              float64 `json:"ms_max"`
	CommMs             float64 `json:"comm_ms"`
	TFLOPSPerGPU       float64 `json:"tflops_per_gpu"`
	WeightGBps         float64 `json:"weight_gbps"`
	TouchedWeightBytes float64 `json:"touched_weight_bytes"`
	FlopsPerGPU        float64 `json:"flops_per_gpu"`
	BoundMs            float64 `json:"bound_ms"`
	BoundHBMMs         float64 `json:"bound_hbm_ms"`
	BoundFlopMs        float64 `json:"bound_flop_ms"`
	BoundCommMs        float64 `json:"bound_comm_ms"`
	BoundKind          string  `json:"bound_kind"`
	CommShare          float64 `json:"comm_share"`
	GFLOPSPerRank      float64 `json:"gflops_per_rank"`
}

// TokensPerRank is the row's tokens on DP rank 0 (the benchmark gives every rank the same).
func (r MoERow) TokensPerRank() int {
	if len(r.Tokens) == 0 {
		return 0
	}
	return r.Tokens[0]
}

// Bound is bound_ms, or max(hbm, flop) + comm from its parts when only they were written.
func (r MoERow) Bound() float64 {
	if r.BoundMs > 0 {
		return r.BoundMs
	}
	return max(r.BoundHBMMs, r.BoundFlopMs) + r.BoundCommMs
}

// TFLOPS is tflops_per_gpu, or gflops_per_rank/1000 from older runs.
func (r MoERow) TFLOPS() float64 {
	if r.TFLOPSPerGPU > 0 {
		return r.TFLOPSPerGPU
	}
	return r.GFLOPSPerRank / 1000
}

// RefRow is one "JSON {...}" line of moe_ref.py.
type RefRow struct {
	Impl          string   `json:"impl"`
	Config        string   `json:"config"`
	World         int      `json:"world"`
	TokensPerRank int      `json:"tokens_per_rank"`
	Ms            float64  `json:"ms"`
	LoopMs        *float64 `json:"loop_ms"`
	TFLOPSPerGPU  float64  `json:"tflops_per_gpu"`
}

// CollResult is one row of our collectives sweep (commbench.Result, read by field name).
// SizeBytes is the full buffer: the gathered output of an all-gather, the input of a
// reduce-scatter, the all-reduce or broadcast buffer (commbench/sweep.go).
type CollResult struct {
	Op        string  `json:"op"`
	SizeBytes int64   `json:"size_bytes"`
	Count     int     `json:"count"`
	DType     string  `json:"type"`
	TimeUS    float64 `json:"time_us"`
	AlgBW     float64 `json:"algbw_gbps"`
	BusBW     float64 `json:"busbw_gbps"`
	Wrong     int64   `json:"wrong"`
	Ranks     int     `json:"ranks"`
}

// CollReport is one communicator's sweep (commbench.Report).
type CollReport struct {
	Backend string       `json:"backend"`
	Layout  string       `json:"layout"`
	Group   string       `json:"group"`
	Ranks   int          `json:"ranks"`
	Results []CollResult `json:"results"`
	// When every rank had its communicators, and when a first collective had completed
	// after that (Unix seconds; 0: not written).
	CommsReadyUnixS float64 `json:"comms_ready_unix_s"`
	ReadyUnixS      float64 `json:"ready_unix_s"`
}

// CollFile is a `bin/worker collectives --json` file: the world's sweep, when every rank
// had its communicators and when a first collective had completed (0: not written).
type CollFile struct {
	File                        string
	World                       CollReport
	Others                      int // reports of other groups, ignored
	CommsReadyUnixS, ReadyUnixS float64
}

// TorchColl is one line of coll_bench.py. Its size is the whole (gathered) array, as ours.
type TorchColl struct {
	Op        string  `json:"op"`
	SizeBytes int64   `json:"size_bytes"`
	TimeUS    float64 `json:"time_us"`
	AlgBW     float64 `json:"algbw_gbps"`
	BusBW     float64 `json:"busbw_gbps"`
}

// Startup holds the seconds from launch to a ready communicator; nil where unknown.
// MoerunFirstS is ours to a first collective completed after that (NCCL connects peers
// in the first collective that needs them), the point torchrun's READY marks.
type Startup struct {
	MoerunS, MoerunFirstS, TorchS *float64
	MoerunHow, TorchHow           string // what was measured
}

// Inputs is everything read from one results folder; a nil or empty field is a missing
// input, with the reason in Missing under the section's key ("moe", "ref", "coll",
// "torch-coll", "startup-moerun", "startup-torch").
type Inputs struct {
	Dir       string
	Host      []string // "GPU n: ..." lines of host.txt
	MoE       []MoERun
	Ref       []RefRow
	Coll      *CollFile
	TorchColl []TorchColl
	Startup   Startup
	Missing   map[string]string
	Notes     []string // inputs skipped or doubtful, one line each
}

// ParseMoERun reads one `bin/worker run --json` file; name is used in errors.
func ParseMoERun(name string, r io.Reader) (MoERun, error) {
	var run MoERun
	if err := decodeObject(r, &run, "rows"); err != nil {
		return run, fmt.Errorf("%s: expected the JSON object of `bin/worker run --json` (preset, layer, rows): %w", name, err)
	}
	run.File = name
	return run, nil
}

// decodeObject decodes one JSON object into v and checks that it has the key want.
func decodeObject(r io.Reader, v any, want string) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	var keys map[string]json.RawMessage
	if err := json.Unmarshal(data, &keys); err != nil {
		return jsonError(data, err)
	}
	if _, ok := keys[want]; !ok {
		return fmt.Errorf("no %q field", want)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return jsonError(data, err)
	}
	return nil
}

// jsonError says where in data a decoding error is (line and column), briefly.
func jsonError(data []byte, err error) error {
	off, ok := jsonpos.Offset(err)
	if !ok || off >= int64(len(bytes.TrimRight(data, " \t\r\n"))) { // unknown, or the end
		return err
	}
	line, col := jsonpos.LineCol(data, off)
	return fmt.Errorf("line %d column %d: %w", line, col-1, err)
}

// ParseCollectives reads a `bin/worker collectives --json` file. It takes the list of
// reports the worker writes, one report object, or an object {"ready_unix_s", "reports"}.
func ParseCollectives(name string, r io.Reader) (*CollFile, error) {
	fail := func(err error) (*CollFile, error) {
		return nil, fmt.Errorf("%s: expected the JSON of `bin/worker collectives --json` (a list of reports with results): %w", name, err)
	}
	data, err := io.ReadAll(r)
	if err != nil {
		return fail(err)
	}
	var reports []CollReport
	var top struct {
		CommsReadyUnixS float64          `json:"comms_ready_unix_s"`
		ReadyUnixS      float64          `json:"ready_unix_s"`
		Reports         []CollReport     `json:"reports"`
		Results         *json.RawMessage `json:"results"`
	}
	trimmed := bytes.TrimSpace(data)
	switch {
	case len(trimmed) > 0 && trimmed[0] == '[':
		if err := json.Unmarshal(data, &reports); err != nil {
			return fail(jsonError(data, err))
		}
	case len(trimmed) > 0 && trimmed[0] == '{':
		if err := json.Unmarshal(data, &top); err != nil {
			return fail(jsonError(data, err))
		}
		switch {
		case top.Results != nil:
			var one CollReport
			if err := json.Unmarshal(data, &one); err != nil {
				return fail(jsonError(data, err))
			}
			reports = []CollReport{one}
		case top.Reports != nil:
			reports = top.Reports
		default:
			return fail(errors.New(`no "results" or "reports" field`))
		}
	default:
		return fail(errors.New("not a JSON list or object"))
	}
	f := &CollFile{File: name, CommsReadyUnixS: top.CommsReadyUnixS, ReadyUnixS: top.ReadyUnixS}
	found := false
	for _, rep := range reports {
		f.CommsReadyUnixS = max(f.CommsReadyUnixS, rep.CommsReadyUnixS)
		f.ReadyUnixS = max(f.ReadyUnixS, rep.ReadyUnixS)
		if !found && (rep.Group == "world" || rep.Group == "") {
			f.World, found = rep, true
			continue
		}
		f.Others++
	}
	if !found {
		return fail(errors.New("no report of the world group"))
	}
	return f, nil
}

// refPrefix is what moe_ref.py prints before its JSON rows. torchrun may tag lines with
// "[rank0]:" or "[default0]:"; that tag is skipped.
var refPrefix = regexp.MustCompile(`^\s*(?:\[[a-z]*\d+\]:\s*)?JSON\s`)

// ParseMoERef reads moe_ref.py's stdout: the rows of its "JSON {...}" lines. Other lines
// are torchrun's noise; a JSON line that does not decode is skipped and named in notes.
func ParseMoERef(name string, r io.Reader) (rows []RefRow, notes []string, err error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		loc := refPrefix.FindStringIndex(line)
		if loc == nil {
			continue
		}
		var row RefRow
		dec := json.NewDecoder(strings.NewReader(line[loc[1]:]))
		if err := dec.Decode(&row); err != nil {
			notes = append(notes, fmt.Sprintf("%s line %d: skipped a JSON line that does not decode (%v)", name, n, err))
			continue
		}
		if row.Config == "" || row.TokensPerRank < 1 || row.Ms <= 0 {
			notes = append(notes, fmt.Sprintf("%s line %d: skipped a JSON line without config, tokens_per_rank and ms", name, n))
			continue
		}
		rows = append(rows, row)
	}
	if err := sc.Err(); err != nil {
		return rows, notes, fmt.Errorf("%s: %w", name, err)
	}
	return rows, notes, nil
}

// collLine is one row of coll_bench.py:
// "all_gather            8192 B       20.4 us  algbw     0.4 GB/s  busbw     0.2 GB/s".
var collLine = regexp.MustCompile(`^\s*(?:\[[a-z]*\d+\]:\s*)?([a-z_]+)\s+(\d+) B\s+([0-9.eE+-]+) us\s+algbw\s+([0-9.eE+-]+) GB/s\s+busbw\s+([0-9.eE+-]+) GB/s\s*$`)

// torchOps are the collectives coll_bench.py prints.
var torchOps = []string{"all_gather", "reduce_scatter", "all_reduce"}

// ParseCollBench reads coll_bench.py's stdout. A line that starts with one of its
// collectives but does not parse is skipped and named in notes; other lines are noise.
func ParseCollBench(name string, r io.Reader) (rows []TorchColl, notes []string, err error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		m := collLine.FindStringSubmatch(line)
		if m == nil {
			if f := strings.Fields(line); len(f) > 0 && slices.Contains(torchOps, f[0]) {
				notes = append(notes, fmt.Sprintf("%s line %d: skipped an unreadable %s line", name, n, f[0]))
			}
			continue
		}
		size, err1 := strconv.ParseInt(m[2], 10, 64)
		t, err2 := strconv.ParseFloat(m[3], 64)
		alg, err3 := strconv.ParseFloat(m[4], 64)
		bus, err4 := strconv.ParseFloat(m[5], 64)
		if err := errors.Join(err1, err2, err3, err4); err != nil || size < 1 || t <= 0 {
			notes = append(notes, fmt.Sprintf("%s line %d: skipped a %s line with unreadable numbers", name, n, m[1]))
			continue
		}
		rows = append(rows, TorchColl{Op: m[1], SizeBytes: size, TimeUS: t, AlgBW: alg, BusBW: bus})
	}
	if err := sc.Err(); err != nil {
		return rows, notes, fmt.Errorf("%s: %w", name, err)
	}
	return rows, notes, nil
}

// ParseUnixTime reads a file holding one unix time in seconds (date +%s.%N).
func ParseUnixTime(name string, r io.Reader) (float64, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", name, err)
	}
	v, err := strconv.ParseFloat(strings.TrimSpace(string(data)), 64)
	if err != nil || v <= 0 {
		return 0, fmt.Errorf("%s: expected a unix time in seconds such as 1764000000.123 (date +%%s.%%N), found %q", name, truncate(strings.TrimSpace(string(data)), 40))
	}
	return v, nil
}

// ParseReady finds the "READY <unix time>" line of bench/torch_startup.py's output; ok is
// false when there is none.
func ParseReady(r io.Reader) (t float64, ok bool) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		for i := 0; i+1 < len(f); i++ {
			if f[i] == "READY" || strings.HasSuffix(f[i], ":READY") {
				if v, err := strconv.ParseFloat(f[i+1], 64); err == nil && v > 0 {
					return v, true
				}
			}
		}
	}
	return 0, false
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// chunkFile matches moe-PRESET-chunkC.json.
var chunkFile = regexp.MustCompile(`^moe-(.+)-chunk(\d+)\.json$`)

// Load reads every input found in the results folder dir. A missing file leaves its
// section empty with the reason in Missing; a file that is there but malformed is an
// error naming it.
func Load(dir string) (Inputs, error) {
	in := Inputs{Dir: dir, Missing: map[string]string{}}
	st, err := os.Stat(dir)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err // the path is named once
		}
		return in, fmt.Errorf("results folder %s: %w (expected the folder bench/gpu.sh filled)", dir, err)
	}
	if !st.IsDir() {
		return in, fmt.Errorf("results folder %s: not a folder (expected the folder bench/gpu.sh filled)", dir)
	}
	path := func(name string) string { return filepath.Join(dir, name) }

	if lines, err := readLines(path(FileHost)); err == nil {
		for _, l := range lines {
			if strings.HasPrefix(strings.TrimSpace(l), "GPU ") {
				in.Host = append(in.Host, strings.TrimSpace(l))
			}
		}
	}

	// Our MoE runs.
	files, err := filepath.Glob(path("moe-*.json"))
	if err != nil {
		return in, err
	}
	sort.Strings(files)
	for _, file := range files {
		run, err := openParse(file, ParseMoERun)
		if err != nil {
			return in, err
		}
		base := filepath.Base(file)
		if m := chunkFile.FindStringSubmatch(base); m != nil {
			run.ChunkRows, _ = strconv.Atoi(m[2])
			if run.Layer.Chunk > 0 {
				run.ChunkRows = run.Layer.Chunk
			}
		}
		if run.Preset == "" {
			run.Preset = run.Layer.Name
		}
		if run.Preset == "" {
			run.Preset = strings.TrimSuffix(strings.TrimPrefix(base, "moe-"), ".json")
			if m := chunkFile.FindStringSubmatch(base); m != nil {
				run.Preset = m[1]
			}
		}
		if !run.MatchRef {
			in.Notes = append(in.Notes, fmt.Sprintf("%s: match_ref is not true: the layer may differ from moe_ref.py's", base))
		}
		in.MoE = append(in.MoE, run)
	}
	if len(in.MoE) == 0 {
		in.Missing["moe"] = "no moe-PRESET.json in " + dir
	}

	// PyTorch's MoE layer.
	if f, err := os.Open(path(FileMoERef)); err == nil {
		rows, notes, err := ParseMoERef(FileMoERef, f)
		f.Close()
		if err != nil {
			return in, err
		}
		in.Ref, in.Notes = rows, append(in.Notes, notes...)
		if len(rows) == 0 {
			in.Missing["ref"] = FileMoERef + " has no JSON rows (did moe_ref.py fail? see moe_ref.log)"
		}
	} else {
		in.Missing["ref"] = "no " + FileMoERef
	}

	// Collectives.
	if c, err := openParse(path(FileCollectives), ParseCollectives); err == nil {
		in.Coll = c
		if len(c.World.Results) == 0 {
			in.Missing["coll"] = FileCollectives + " has no results"
		}
		if c.Others > 0 {
			in.Notes = append(in.Notes, fmt.Sprintf("%s: %d report(s) of groups other than the world ignored", FileCollectives, c.Others))
		}
	} else if errors.Is(err, fs.ErrNotExist) {
		in.Missing["coll"] = "no " + FileCollectives
	} else {
		return in, err
	}
	if f, err := os.Open(path(FileCollBench)); err == nil {
		rows, notes, err := ParseCollBench(FileCollBench, f)
		f.Close()
		if err != nil {
			return in, err
		}
		in.TorchColl, in.Notes = rows, append(in.Notes, notes...)
		if len(rows) == 0 {
			in.Missing["torch-coll"] = FileCollBench + " has no result lines (did coll_bench.py fail? see coll_bench.log)"
		}
	} else {
		in.Missing["torch-coll"] = "no " + FileCollBench
	}

	if err := loadStartup(&in, path); err != nil {
		return in, err
	}
	return in, nil
}

// loadStartup fills in.Startup from startup.json, else from the raw start, ready and end
// times bench/gpu.sh records.
func loadStartup(in *Inputs, path func(string) string) error {
	var given struct {
		MoerunS *float64 `json:"moerun_s"`
		TorchS  *float64 `json:"torch_s"`
	}
	f, err := os.Open(path(FileStartup))
	if err == nil {
		err = decodeObject(f, &given, "moerun_s")
		f.Close()
		if err != nil {
			return fmt.Errorf("%s: expected {\"moerun_s\": seconds, \"torch_s\": seconds}: %w", path(FileStartup), err)
		}
		in.Startup = Startup{MoerunS: given.MoerunS, TorchS: given.TorchS, MoerunHow: "from " + FileStartup, TorchHow: "from " + FileStartup}
		if given.TorchS == nil {
			in.Missing["startup-torch"] = FileStartup + " has no torch_s"
		}
		return nil
	}

	// Ours: start → ready_unix_s of the tiny sweep, else start → exit.
	start, err := readTime(path(FileMoerunStart))
	switch {
	case err != nil:
		return err
	case start == 0:
		in.Missing["startup-moerun"] = "no " + FileMoerunStart
	default:
		c, err := openParse(path(FileMoerunStartup), ParseCollectives)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		end, err2 := readTime(path(FileMoerunEnd))
		if err2 != nil {
			return err2
		}
		// The sweep's JSON is written at its end, so its presence says the launch
		// succeeded and its exit time is an upper bound of the start-up.
		switch {
		case c == nil:
			in.Missing["startup-moerun"] = "no " + FileMoerunStartup + " (did the launch fail? see startup-moerun.log)"
		case c.CommsReadyUnixS > 0 && c.ReadyUnixS > 0:
			s, first := c.CommsReadyUnixS-start, c.ReadyUnixS-start
			in.Startup.MoerunS, in.Startup.MoerunHow = &s, "bin/launch started → every communicator of every rank set up (comms_ready_unix_s)"
			in.Startup.MoerunFirstS = &first
		case c.ReadyUnixS > 0:
			s := c.ReadyUnixS - start
			in.Startup.MoerunS, in.Startup.MoerunHow = &s, "bin/launch started → every communicator ready and a first collective done (ready_unix_s)"
		case end > 0:
			s := end - start
			in.Startup.MoerunS, in.Startup.MoerunHow = &s, "bin/launch started → exited after a one-row sweep (an upper bound: "+FileMoerunStartup+" has no ready_unix_s)"
		default:
			in.Missing["startup-moerun"] = FileMoerunStartup + " has no ready_unix_s and there is no " + FileMoerunEnd
		}
	}

	// torchrun: start → READY. (No READY line: torchrun failed, so its exit time says
	// nothing.)
	start, err = readTime(path(FileTorchStart))
	switch {
	case err != nil:
		return err
	case start == 0:
		in.Missing["startup-torch"] = "no " + FileTorchStart
	default:
		ready, ok := 0.0, false
		if f, err := os.Open(path(FileTorchStartup)); err == nil {
			ready, ok = ParseReady(f)
			f.Close()
		}
		if !ok {
			in.Missing["startup-torch"] = "no READY line in " + FileTorchStartup + " (did torchrun fail? see startup-torch.log)"
			break
		}
		s := ready - start
		in.Startup.TorchS, in.Startup.TorchHow = &s, "torchrun started → first all_reduce done (READY)"
	}
	return nil
}

// readTime reads a unix-time file; 0 and no error when it does not exist.
func readTime(file string) (float64, error) {
	f, err := os.Open(file)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return ParseUnixTime(file, f)
}

// openParse opens file and parses it with parse, which names it in errors. A
// missing file is an error that matches fs.ErrNotExist.
func openParse[T any](file string, parse func(string, io.Reader) (T, error)) (T, error) {
	f, err := os.Open(file)
	if err != nil {
		var zero T
		return zero, err
	}
	defer f.Close()
	return parse(file, f)
}

func readLines(file string) ([]string, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	return strings.Split(string(data), "\n"), nil
}
