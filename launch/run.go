package launch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/moerun/moerun/rank"
	"github.com/moerun/moerun/rendezvous"
	"github.com/moerun/moerun/topology"
	"github.com/moerun/moerun/worker/progress"
)

// drainTimeout bounds how long the launcher reads output after the last rank was reaped and
// its process group swept; only a process that left the group (setsid) can hold a pipe open
// that long.
const drainTimeout = 2 * time.Second

// tailTimeout bounds how long a reaped rank's output is read before its exit is reported
// with its last lines: the pipes end with the process unless a child of it holds them.
const tailTimeout = 500 * time.Millisecond

// pollDial bounds the progress poller's connection to the launcher's own store.
const pollDial = 5 * time.Second

// Run runs one job and returns the launcher's exit code (see Main). Before anything starts
// it checks the layout, places the ranks on GPUs and CPUs (placeJob; exit 2 for both) and
// finds PROGRAM on PATH (exit 127). It stops the job when ctx ends, as it does on SIGINT or
// SIGTERM.
//
// Run is the one loop around the supervisor: it owns the child processes, the launcher's
// signals and the grace timer. Its goroutine stays locked to its OS thread until every child
// has been reaped, because Pdeathsig fires when the thread that forked the child exits
// (go.dev/issue/27505), not the process.
func Run(ctx context.Context, o Options, stdout, stderr io.Writer) int {
	out, errOut := &sink{w: stdout}, &sink{w: stderr}
	say := func(format string, args ...any) { fmt.Fprintf(errOut, "launch: "+format+"\n", args...) }

	layout, err := rank.NewLayout(o.NP, o.TP, o.PCP, o.PP, o.DP, o.EP)
	if err != nil {
		say("%v", err)
		return ExitUsage
	}
	host, err := os.Hostname()
	if err != nil {
		host = "localhost"
	}
	pl, err := placeJob(o, layout, host, os.LookupEnv)
	for _, note := range pl.notes {
		say("%s", note)
	}
	if err != nil {
		say("%v", err)
		return ExitUsage
	}
	path, err := exec.LookPath(o.Program)
	if err != nil {
		say("%v", err)
		return ExitNotFound
	}
	if o.ReportBindings {
		for r := range pl.ranks {
			say("%s", pl.line(r, host))
		}
	}

	token, err := rendezvous.NewToken()
	if err != nil {
		say("%v", err)
		return 1
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		say("rendezvous store: %v", err)
		return 1
	}
	logger := slog.New(slog.NewTextHandler(errOut, &slog.HandlerOptions{Level: slog.LevelWarn}))
	store := rendezvous.NewServer(token, logger)
	go store.Serve(ln)
	defer store.Close() // waits for Serve and the connections
	addr := ln.Addr().(*net.TCPAddr)
	period := progress.Period(o.Timeout)
	job := jobEnv{layout: layout, storeHost: addr.IP.String(), storePort: addr.Port, token: token, peerTimeout: o.Timeout, heartbeat: period, gpus: pl.visible}

	sigc := make(chan os.Signal, 2)
	signal.Notify(sigc, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigc)

	runtime.LockOSThread()
	defer runtime.UnlockOSThread() // deferred calls run after every child has been reaped
	// This thread's CPUs, restored after each bound fork.
	var ownCPUs []int
	if pl.apply {
		if ownCPUs, err = threadCPUs(); err != nil {
			say("read the launcher's CPU affinity: %v", err)
			return 1
		}
	}

	n := layout.World()
	sup := newSupervisor(n, o.Grace, host)
	exits := make(chan evExited, n) // one per started rank; each waiter sends exactly once
	var pumps sync.WaitGroup
	var pipes []*os.File // read ends, closed after draining
	pids := make([]int, n)
	env := os.Environ()

	// The progress watch: a poller reads every rank's record from the store each period.
	watch := newWatchdog(n, o.Timeout)
	polls := make(chan [][]byte)
	pollCtx, stopPolls := context.WithCancel(context.Background())
	var poller sync.WaitGroup
	poller.Go(func() { pollProgress(pollCtx, ln.Addr().String(), token, n, period, polls) })
	defer poller.Wait()
	defer stopPolls() // before the store closes (deferred earlier, so it runs later)
	info := func(r int) (int, string) { return pids[r], procState(pids[r]) }

	var pending []event
	for r := range n {
		cmd := exec.Command(path, o.Args...)
		cmd.Args[0] = o.Program
		cmd.Env = workerEnv(env, job, r)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		tl := new(tail)
		// The child starts with this thread's CPUs, and its threads with the child's.
		bind := pl.apply && pl.ranks[r].cpus != nil
		if bind {
			if err := setThreadCPUs(pl.ranks[r].cpus); err != nil {
				pending = append(pending, evStartFailed{r, fmt.Errorf("bind to CPUs %s: %w", topology.FormatCPUs(pl.ranks[r].cpus), err)})
				break
			}
		}
		rOut, rErr, rankPumps, err := startRank(cmd, fmt.Sprintf("[%d] ", r), out, errOut, tl, &pumps)
		if bind {
			if err := setThreadCPUs(ownCPUs); err != nil {
				say("restore the launcher's CPUs %s: %v", topology.FormatCPUs(ownCPUs), err)
			}
		}
		if err != nil {
			pending = append(pending, evStartFailed{r, err})
			break
		}
		pipes = append(pipes, rOut, rErr)
		pids[r] = cmd.Process.Pid
		pending = append(pending, evStarted{r, cmd.Process.Pid})
		go func() {
			cmd.Wait() // the status is in ProcessState; pipes are ours, so Wait only reaps
			// Its last lines may still be in the pipes: read them before reporting.
			t := time.NewTimer(tailTimeout)
			select {
			case <-rankPumps:
			case <-t.C:
			}
			t.Stop()
			exits <- exitEvent(r, cmd.ProcessState, tl.last())
		}()
	}

	var grace *time.Timer
	var graceC <-chan time.Time
	defer func() {
		if grace != nil {
			grace.Stop()
		}
	}()
	ctxDone := ctx.Done()
	for {
		var ev event
		if len(pending) > 0 {
			ev, pending = pending[0], pending[1:]
		} else {
			select {
			case e := <-exits:
				watch.exited(e.rank)
				ev = e
			case recs := <-polls:
				now := time.Now()
				for r, v := range recs {
					watch.observe(now, r, v, v != nil)
				}
				report := watch.check(now, info)
				if report == nil {
					continue
				}
				ev = evHung{report}
			case s := <-sigc:
				sig := s.(syscall.Signal)
				ev = evInterrupted{sig: sig, why: "got " + sigName(sig)}
			case <-ctxDone:
				ctxDone = nil
				ev = evInterrupted{sig: syscall.SIGTERM, why: ctx.Err().Error()}
			case <-graceC:
				graceC = nil
				ev = evGraceExpired{}
			}
		}
		for _, a := range sup.step(ev) {
			switch a := a.(type) {
			case actPrint:
				fmt.Fprintln(errOut, a.line)
			case actSignal:
				if err := signalGroup(a.pid, a.sig); err != nil {
					say("rank %d: %v", a.rank, err)
				}
				if a.sig == syscall.SIGTERM {
					// A stopped rank (SIGSTOP, Ctrl-Z) would hold its SIGTERM until the
					// grace ran out: let it act on it now.
					signalGroup(a.pid, syscall.SIGCONT)
				}
			case actStartGrace:
				if grace == nil {
					grace = time.NewTimer(a.d)
				} else {
					grace.Reset(a.d)
				}
				graceC = grace.C
			case actFinish:
				// Grandchildren that stayed in a rank's group would outlive the job and
				// hold its output pipes open.
				for _, pid := range pids {
					if pid > 0 {
						signalGroup(pid, syscall.SIGKILL)
					}
				}
				drain(&pumps, pipes)
				return a.code
			}
		}
	}
}

// startRank starts cmd with its stdout and stderr on fresh pipes, each read by a pump
// goroutine counted in pumps that keeps the rank's last lines in tl; done is closed when
// both pumps have ended. The children get the write ends directly (no copying goroutine
// inside os/exec), so cmd.Wait returns as soon as the process is reaped.
func startRank(cmd *exec.Cmd, prefix string, out, errOut io.Writer, tl *tail, pumps *sync.WaitGroup) (rOut, rErr *os.File, done <-chan struct{}, err error) {
	rOut, wOut, err := os.Pipe()
	if err != nil {
		return nil, nil, nil, err
	}
	rErr, wErr, err := os.Pipe()
	if err != nil {
		rOut.Close()
		wOut.Close()
		return nil, nil, nil, err
	}
	cmd.Stdout, cmd.Stderr = wOut, wErr
	err = cmd.Start()
	wOut.Close()
	wErr.Close()
	if err != nil {
		rOut.Close()
		rErr.Close()
		return nil, nil, nil, err
	}
	var both sync.WaitGroup
	both.Add(2)
	ch := make(chan struct{})
	pumps.Go(func() { defer both.Done(); pump(rOut, prefix, out, tl) })
	pumps.Go(func() { defer both.Done(); pump(rErr, prefix, errOut, tl) })
	pumps.Go(func() { both.Wait(); close(ch) })
	return rOut, rErr, ch, nil
}

// pollProgress reads every rank's progress record from the store each period and sends
// them (nil where a rank has none) until ctx ends. A read that fails is skipped; the watch
// then sees no change, as it would of a silent rank.
func pollProgress(ctx context.Context, addr, token string, ranks int, period time.Duration, out chan<- [][]byte) {
	tick := time.NewTicker(period)
	defer tick.Stop()
	var c *rendezvous.Client
	defer func() {
		if c != nil {
			c.Close()
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if c == nil {
			// Connect at the first tick (a job shorter than a period never does), and
			// let the handshake finish even if the job ends meanwhile: the store warns
			// about a connection closed before its token.
			dctx, cancel := context.WithTimeout(context.Background(), pollDial)
			var err error
			c, err = rendezvous.Dial(dctx, addr, token)
			cancel()
			if err != nil {
				return // its own store unreachable: no watch
			}
		}
		recs := make([][]byte, ranks)
		for r := range recs {
			v, ok, err := c.Get(ctx, progress.Key(r))
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				continue
			}
			if ok {
				recs[r] = v
			}
		}
		select {
		case out <- recs:
		case <-ctx.Done():
			return
		}
	}
}

// procState describes the state of process pid when it matters to a hang: stopped by a
// signal or a tracer, or stuck in the kernel. It reads /proc/PID/stat.
func procState(pid int) string {
	if pid <= 0 {
		return ""
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')') // the command may hold spaces and parentheses
	if i < 0 || i+2 >= len(s) {
		return ""
	}
	switch s[i+2] {
	case 'T':
		return "process stopped"
	case 't':
		return "process stopped by a tracer"
	case 'D':
		return "process in uninterruptible sleep"
	}
	return ""
}

// drain waits for the pumps to reach EOF, up to drainTimeout, then closes the read ends so
// that a pipe held open by an escaped process cannot keep the launcher alive.
func drain(pumps *sync.WaitGroup, pipes []*os.File) {
	done := make(chan struct{})
	go func() {
		pumps.Wait()
		close(done)
	}()
	t := time.NewTimer(drainTimeout)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	}
	for _, f := range pipes {
		f.Close()
	}
	<-done
}

func exitEvent(r int, ps *os.ProcessState, last []string) evExited {
	ws, ok := ps.Sys().(syscall.WaitStatus)
	if ok && ws.Signaled() {
		return evExited{rank: r, sig: ws.Signal(), last: last}
	}
	return evExited{rank: r, code: ps.ExitCode(), last: last}
}

// signalGroup sends sig to the process group led by pid. A group that is already gone
// (ESRCH) is not an error: the rank exited between the decision and the signal.
func signalGroup(pid int, sig syscall.Signal) error {
	if err := syscall.Kill(-pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("%s to process group %d: %w", sigName(sig), pid, err)
	}
	return nil
}
