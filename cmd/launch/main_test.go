package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/moerun/moerun/launch"
	"github.com/moerun/moerun/rendezvous"
	"github.com/moerun/moerun/worker"
)

// pollLimit bounds every wait for a condition in these tests; a test that reaches it has
// failed, it does not pass slowly.
const pollLimit = 20 * time.Second

// TestMain makes the test binary serve as the commands the scripts run: launch itself,
// fakeworker (a worker with scripted behaviour) and exitcode (runs a command, signals it
// on cue, and checks its exit status and duration).
func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"launch":     func() { os.Exit(launch.Main(os.Args, os.Stdout, os.Stderr)) },
		"worker":     func() { os.Exit(runWorker()) },
		"fakeworker": func() { os.Exit(fakeworker(os.Args[1:])) },
		"exitcode":   func() { os.Exit(exitcode(os.Args[1:])) },
	})
}

// findNumpyPython is a python3 that has numpy (the PATH one, or Debian's), or "". It runs
// in the test process only: the same binary also serves as launch and worker, which must
// start fast.
func findNumpyPython() string {
	for _, py := range []string{"python3", "/usr/bin/python3"} {
		if exec.Command(py, "-c", "import numpy").Run() == nil {
			return py
		}
	}
	return ""
}

func TestScripts(t *testing.T) {
	numpyPython := findNumpyPython()
	testscript.Run(t, testscript.Params{
		Dir:                 "testdata/script",
		RequireExplicitExec: true,
		Setup: func(env *testscript.Env) error {
			// Under -race every process sleeps 1s at exit by default (atexit_sleep_ms);
			// the scripts start dozens of them.
			env.Setenv("GORACE", strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
			env.Setenv("NUMPY_PYTHON", numpyPython)
			examples, err := filepath.Abs("../../examples")
			if err != nil {
				return err
			}
			env.Setenv("EXAMPLES", examples)
			host, err := os.Hostname() // as launch --report-bindings names it
			if err != nil {
				host = "localhost"
			}
			env.Setenv("HOST", host)
			return nil
		},
		Condition: func(cond string) (bool, error) {
			if cond == "numpy" {
				return numpyPython != "", nil
			}
			if want, ok := strings.CutPrefix(cond, "cpus:"); ok { // this process's CPUs
				cpus, err := ownCPUs()
				return cpus == want, err
			}
			return false, fmt.Errorf("unknown condition %q", cond)
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"waitfiles": cmdWaitFiles,
			"gone":      cmdGone,
			"killrank":  cmdKillRank,
			"nomarked":  cmdNoMarked,
			"busy":      cmdBusy,
			"affinity":  cmdAffinity,
		},
	})
}

// cmdWaitFiles: waitfiles N GLOB — wait until at least N files match GLOB.
func cmdWaitFiles(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: waitfiles N GLOB")
	}
	n, err := strconv.Atoi(args[0])
	ts.Check(err)
	if err := awaitFiles(n, ts.MkAbs(args[1]), pollLimit); err != nil {
		ts.Fatalf("%v", err)
	}
}

// cmdGone: gone DURATION DIR — every process whose pid is in DIR/*.pid has ended within
// DURATION. Liveness comes from /proc/PID/stat: kill(pid, 0) succeeds on a zombie, and an
// orphaned zombie may never be reaped in a container.
func cmdGone(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: gone DURATION DIR")
	}
	d, err := time.ParseDuration(args[0])
	ts.Check(err)
	files, err := filepath.Glob(filepath.Join(ts.MkAbs(args[1]), "*.pid"))
	ts.Check(err)
	if len(files) == 0 {
		ts.Fatalf("no pid files in %s", args[1])
	}
	var pids []int
	for _, f := range files {
		pid, err := strconv.Atoi(strings.TrimSpace(ts.ReadFile(f)))
		ts.Check(err)
		pids = append(pids, pid)
	}
	deadline := time.Now().Add(d)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		var alive []string
		for _, pid := range pids {
			if st := procState(pid); st != "" {
				alive = append(alive, fmt.Sprintf("%d (%s)", pid, st))
			}
		}
		if len(alive) == 0 {
			return
		}
		if time.Now().After(deadline) {
			ts.Fatalf("still alive after %v: %s", d, strings.Join(alive, ", "))
		}
		<-tick.C
	}
}

// procState returns the state letter of a live process, or "" if it is gone or a zombie.
func procState(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	// pid (comm) S …; comm may hold spaces and parentheses, so cut at the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return ""
	}
	if st := s[i+2 : i+3]; st != "Z" && st != "X" {
		return st
	}
	return ""
}

func awaitFiles(n int, glob string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		m, err := filepath.Glob(glob)
		if err != nil {
			return err
		}
		if len(m) >= n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d files matching %s after %v", len(m), n, glob, limit)
		}
		<-tick.C
	}
}

// fakeworker runs its arguments as steps, in order. A step "R@step" runs on rank R only
// (RANK from the environment). Steps:
//
//	env:A,B,…      print A=value for each name ("A unset" if it is not set)
//	cpus           print "cpus LIST", the CPUs it may run on (Cpus_allowed_list)
//	say:TEXT       print TEXT to stdout;  err:TEXT prints it to stderr
//	nonl:TEXT      print TEXT to stdout with no newline
//	long:N         print a line of N 'x'
//	lines:N        print "line 1" to "line N"
//	args …         print the remaining arguments, quoted, and stop
//	pidfile:DIR    write the pid to DIR/RANK.pid
//	touch:PATH     create PATH
//	await:N:GLOB   wait until N files match GLOB
//	store          meet every rank at the rendezvous store (Add, then Wait for the last)
//	exit:N         exit with status N
//	killself       send SIGKILL to itself
//	ignoreterm:DIR from now on SIGTERM prints "ignoring SIGTERM" and creates DIR/RANK
//	hang           block until SIGTERM, print "got SIGTERM", and die of it
//
// SIGTERM is caught from the start, so a rank that has written its pid file will report
// the SIGTERM it gets. Without exit or hang it exits 0 after the last step.
func fakeworker(args []string) int {
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	rank := os.Getenv(rendezvous.EnvRank)
	ignoreDir := ""
	fail := func(format string, a ...any) int {
		fmt.Fprintf(os.Stderr, "fakeworker: "+format+"\n", a...)
		return 99
	}
	for i, arg := range args {
		if r, step, ok := strings.Cut(arg, "@"); ok && !strings.Contains(r, ":") {
			if r != rank {
				continue
			}
			arg = step
		}
		verb, val, _ := strings.Cut(arg, ":")
		switch verb {
		case "env":
			for _, name := range strings.Split(val, ",") {
				if v, ok := os.LookupEnv(name); ok {
					fmt.Printf("%s=%s\n", name, v)
				} else {
					fmt.Printf("%s unset\n", name)
				}
			}
		case "cpus":
			cpus, err := ownCPUs()
			if err != nil {
				return fail("%v", err)
			}
			fmt.Println("cpus", cpus)
		case "say":
			fmt.Println(val)
		case "err":
			fmt.Fprintln(os.Stderr, val)
		case "nonl":
			fmt.Print(val)
		case "long":
			n, _ := strconv.Atoi(val)
			fmt.Println(strings.Repeat("x", n))
		case "lines":
			n, _ := strconv.Atoi(val)
			for i := 1; i <= n; i++ {
				fmt.Printf("line %d\n", i)
			}
		case "args":
			fmt.Printf("args %q\n", args[i+1:])
			return 0
		case "pidfile":
			if err := os.MkdirAll(val, 0o777); err != nil {
				return fail("%v", err)
			}
			// Write then rename, so that a reader never sees a partial pid.
			tmp := filepath.Join(val, rank+".tmp")
			if err := os.WriteFile(tmp, []byte(strconv.Itoa(os.Getpid())), 0o666); err != nil {
				return fail("%v", err)
			}
			if err := os.Rename(tmp, filepath.Join(val, rank+".pid")); err != nil {
				return fail("%v", err)
			}
		case "touch":
			if err := os.WriteFile(val, nil, 0o666); err != nil {
				return fail("%v", err)
			}
		case "await":
			n, glob, _ := strings.Cut(val, ":")
			k, _ := strconv.Atoi(n)
			if err := awaitFiles(k, glob, pollLimit); err != nil {
				return fail("%v", err)
			}
		case "store":
			if err := meet(); err != nil {
				return fail("%v", err)
			}
		case "exit":
			n, _ := strconv.Atoi(val)
			return n
		case "killself":
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {}
		case "ignoreterm":
			ignoreDir = val
			os.MkdirAll(ignoreDir, 0o777)
		case "hang":
			for range term {
				if ignoreDir == "" {
					fmt.Println("got SIGTERM")
					signal.Reset(syscall.SIGTERM)
					syscall.Kill(os.Getpid(), syscall.SIGTERM)
					select {}
				}
				fmt.Println("ignoring SIGTERM")
				os.WriteFile(filepath.Join(ignoreDir, rank), nil, 0o666)
			}
		default:
			return fail("unknown step %q", arg)
		}
	}
	return 0
}

// meet dials the store the launcher announced and waits until every rank has arrived.
func meet() error {
	ctx, cancel := context.WithTimeout(context.Background(), pollLimit)
	defer cancel()
	addr := os.Getenv(rendezvous.EnvMasterAddr) + ":" + os.Getenv(rendezvous.EnvMasterPort)
	c, err := rendezvous.Dial(ctx, addr, os.Getenv(rendezvous.EnvToken))
	if err != nil {
		return err
	}
	defer c.Close()
	world, _ := strconv.Atoi(os.Getenv(rendezvous.EnvWorldSize))
	n, err := c.Add(ctx, "arrived", 1)
	if err != nil {
		return err
	}
	if int(n) == world {
		if err := c.Set(ctx, "all-here", []byte(strconv.Itoa(world))); err != nil {
			return err
		}
	}
	v, err := c.Wait(ctx, "all-here")
	if err != nil {
		return err
	}
	fmt.Printf("store ok: %s ranks\n", v)
	return nil
}

// sendStep is one -send of exitcode: when N files match GLOB, send SIG.
type sendStep struct {
	sig  syscall.Signal
	n    int
	glob string
}

type sendSteps []sendStep

func (s *sendSteps) String() string { return fmt.Sprint(*s) }

func (s *sendSteps) Set(v string) error {
	name, rest, ok1 := strings.Cut(v, ":")
	n, glob, ok2 := strings.Cut(rest, ":")
	sig, ok3 := map[string]syscall.Signal{"INT": syscall.SIGINT, "TERM": syscall.SIGTERM, "KILL": syscall.SIGKILL}[name]
	k, err := strconv.Atoi(n)
	if !ok1 || !ok2 || !ok3 || err != nil {
		return errors.New("want SIG:N:GLOB with SIG one of INT, TERM, KILL")
	}
	*s = append(*s, sendStep{sig, k, glob})
	return nil
}

// exitcode [-within DUR] [-send SIG:N:GLOB]… CODE CMD [ARGS…] runs CMD with this process's
// stdio and environment, sends each -send signal once N files match GLOB, and succeeds if
// CMD exits with CODE (128+n for death by signal n) within DUR. SIGINT and SIGTERM sent to
// exitcode (a script's kill) are passed on to CMD.
func exitcode(args []string) int {
	fs := flag.NewFlagSet("exitcode", flag.ContinueOnError)
	within := fs.Duration("within", pollLimit, "fail if CMD runs longer")
	var sends sendSteps
	fs.Var(&sends, "send", "SIG:N:GLOB: send SIG once N files match GLOB (repeatable, in order)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() < 2 {
		fmt.Fprintln(os.Stderr, "usage: exitcode [-within DUR] [-send SIG:N:GLOB]... CODE CMD [ARGS...]")
		return 2
	}
	want, err := strconv.Atoi(fs.Arg(0))
	if err != nil {
		fmt.Fprintln(os.Stderr, "exitcode:", err)
		return 2
	}
	cmd := exec.Command(fs.Arg(1), fs.Args()[2:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	relay := make(chan os.Signal, 2)
	signal.Notify(relay, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(relay)
	start := time.Now()
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "exitcode:", err)
		return 1
	}
	go func() {
		for s := range relay {
			cmd.Process.Signal(s)
		}
	}()
	exited := make(chan struct{})
	done := make(chan error, 1)
	go func() { // the cues; it ends when the command does
		for _, s := range sends {
			if err := awaitFiles(s.n, s.glob, *within); err != nil {
				done <- err
				return
			}
			if err := cmd.Process.Signal(s.sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
				done <- err
				return
			}
		}
		done <- nil
	}()
	go func() {
		cmd.Wait()
		close(exited)
	}()
	timer := time.NewTimer(*within)
	defer timer.Stop()
	late := false
	select {
	case <-exited:
	case <-timer.C:
		late = true
		cmd.Process.Signal(syscall.SIGQUIT) // a goroutine dump says where it hung
		<-exited
	}
	elapsed := time.Since(start)
	if late {
		fmt.Fprintf(os.Stderr, "exitcode: %s still running after %v\n", fs.Arg(1), *within)
		return 1
	}
	if len(sends) > 0 {
		if err := <-done; err != nil {
			fmt.Fprintln(os.Stderr, "exitcode:", err)
			return 1
		}
	}
	got := cmd.ProcessState.ExitCode()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		got = 128 + int(ws.Signal())
	}
	if got != want {
		fmt.Fprintf(os.Stderr, "exitcode: %s exited with %d after %v, want %d\n", fs.Arg(1), got, elapsed.Round(time.Millisecond), want)
		return 1
	}
	return 0
}

// runWorker is bin/worker, so that scripts run the real worker under the real launcher.
func runWorker() int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return worker.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
}

// cmdKillRank: killrank RANK [STOP] — once the marked job is busy (see busyRanks), SIGKILL
// (or SIGSTOP) its rank RANK. Workers are marked by the script's MOERUN_TEST_MARK in their
// environment.
func cmdKillRank(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 1 || len(args) > 2 || len(args) == 2 && args[1] != "STOP" {
		ts.Fatalf("usage: killrank RANK [STOP]")
	}
	sig := syscall.SIGKILL
	if len(args) == 2 {
		sig = syscall.SIGSTOP
	}
	ranks := busyRanks(ts)
	victim, ok := ranks["RANK="+args[0]]
	if !ok {
		ts.Fatalf("the marked job has no rank %s", args[0])
	}
	ts.Check(syscall.Kill(victim, sig))
}

// cmdBusy: busy — wait until the marked job is busy (see busyRanks).
func cmdBusy(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 0 {
		ts.Fatalf("usage: busy")
	}
	busyRanks(ts)
}

// busyRanks waits until the marked job's rank 0 is running and has used 0.2 s of CPU (it
// is inside its collectives), and returns the job's ranks.
func busyRanks(ts *testscript.TestScript) map[string]int {
	mark := "MOERUN_TEST_MARK=" + ts.Getenv("MOERUN_TEST_MARK")
	deadline := time.Now().Add(pollLimit)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for ; time.Now().Before(deadline); <-tick.C {
		ranks := markedRanks(mark)
		if first, ok := ranks["RANK=0"]; ok && cpuTicks(first) >= 20 {
			return ranks
		}
	}
	ts.Fatalf("the marked job never got going")
	return nil
}

// cmdNoMarked: nomarked DURATION — within DURATION no process carrying this script's
// MOERUN_TEST_MARK is left (zombies count as gone).
func cmdNoMarked(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: nomarked DURATION")
	}
	d, err := time.ParseDuration(args[0])
	ts.Check(err)
	mark := "MOERUN_TEST_MARK=" + ts.Getenv("MOERUN_TEST_MARK")
	deadline := time.Now().Add(d)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		left := markedRanks(mark)
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			ts.Fatalf("processes still running after %v: %v", d, left)
		}
		<-tick.C
	}
}

// markedRanks maps "RANK=n" to the pid of each live process whose environment holds mark.
func markedRanks(mark string) map[string]int {
	out := map[string]int{}
	dirs, _ := filepath.Glob("/proc/[0-9]*/environ")
	for _, f := range dirs {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		vars := strings.Split(string(b), "\x00")
		marked, rank := false, ""
		for _, v := range vars {
			if v == mark {
				marked = true
			}
			if strings.HasPrefix(v, "RANK=") {
				rank = v
			}
		}
		if marked && rank != "" {
			pid, _ := strconv.Atoi(strings.Split(f, "/")[2])
			if procState(pid) != "" {
				out[rank] = pid
			}
		}
	}
	return out
}

// cpuTicks is the user+system CPU time of pid in clock ticks (fields 14 and 15 of stat).
func cpuTicks(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(fields) < 13 {
		return 0
	}
	u, _ := strconv.Atoi(fields[11])
	k, _ := strconv.Atoi(fields[12])
	return u + k
}
