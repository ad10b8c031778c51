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
	"sync"
	"syscall"
	"time"

	"github.com/moerun/moerun/rank"
	"github.com/moerun/moerun/rendezvous"
)

// drainTimeout bounds how long the launcher reads output after the last rank was reaped and
// its process group swept; only a process that left the group (setsid) can hold a pipe open
// that long.
const drainTimeout = 2 * time.Second

// Run runs one job and returns the launcher's exit code (see Main). Before anything starts
// it checks the layout (exit 2) and finds PROGRAM on PATH (exit 127). It stops the job when
// ctx ends, as it does on SIGINT or SIGTERM.
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
	path, err := exec.LookPath(o.Program)
	if err != nil {
		say("%v", err)
		return ExitNotFound
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
	job := jobEnv{layout: layout, storeHost: addr.IP.String(), storePort: addr.Port, token: token, peerTimeout: o.Timeout}

	sigc := make(chan os.Signal, 2)
	signal.Notify(sigc, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigc)

	runtime.LockOSThread()
	defer runtime.UnlockOSThread() // deferred calls run after every child has been reaped

	n := layout.World()
	sup := newSupervisor(n, o.Grace)
	exits := make(chan evExited, n) // one per started rank; each waiter sends exactly once
	var pumps sync.WaitGroup
	var pipes []*os.File // read ends, closed after draining
	pids := make([]int, n)
	env := os.Environ()

	var pending []event
	for r := range n {
		cmd := exec.Command(path, o.Args...)
		cmd.Args[0] = o.Program
		cmd.Env = workerEnv(env, job, r)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		rOut, rErr, err := startRank(cmd, fmt.Sprintf("[%d] ", r), out, errOut, &pumps)
		if err != nil {
			pending = append(pending, evStartFailed{r, err})
			break
		}
		pipes = append(pipes, rOut, rErr)
		pids[r] = cmd.Process.Pid
		pending = append(pending, evStarted{r, cmd.Process.Pid})
		go func() {
			cmd.Wait() // the status is in ProcessState; pipes are ours, so Wait only reaps
			exits <- exitEvent(r, cmd.ProcessState)
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
				ev = e
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
// goroutine counted in pumps. The children get the write ends directly (no copying
// goroutine inside os/exec), so cmd.Wait returns as soon as the process is reaped.
func startRank(cmd *exec.Cmd, prefix string, out, errOut io.Writer, pumps *sync.WaitGroup) (rOut, rErr *os.File, err error) {
	rOut, wOut, err := os.Pipe()
	if err != nil {
		return nil, nil, err
	}
	rErr, wErr, err := os.Pipe()
	if err != nil {
		rOut.Close()
		wOut.Close()
		return nil, nil, err
	}
	cmd.Stdout, cmd.Stderr = wOut, wErr
	err = cmd.Start()
	wOut.Close()
	wErr.Close()
	if err != nil {
		rOut.Close()
		rErr.Close()
		return nil, nil, err
	}
	pumps.Go(func() { pump(rOut, prefix, out) })
	pumps.Go(func() { pump(rErr, prefix, errOut) })
	return rOut, rErr, nil
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

func exitEvent(r int, ps *os.ProcessState) evExited {
	ws, ok := ps.Sys().(syscall.WaitStatus)
	if ok && ws.Signaled() {
		return evExited{rank: r, sig: ws.Signal()}
	}
	return evExited{rank: r, code: ps.ExitCode()}
}

// signalGroup sends sig to the process group led by pid. A group that is already gone
// (ESRCH) is not an error: the rank exited between the decision and the signal.
func signalGroup(pid int, sig syscall.Signal) error {
	if err := syscall.Kill(-pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("%s to process group %d: %w", sigName(sig), pid, err)
	}
	return nil
}
