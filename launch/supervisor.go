package launch

import (
	"fmt"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The supervisor is the launcher's decision core: events (a rank started, exited, could not
// start; the job hung; the launcher was interrupted; the grace period ran out) go in,
// actions (print a line, signal a rank's process group, start the grace timer, finish with
// a code) come out. It does no I/O and reads no clock, so its behaviour is a table of event sequences
// (supervisor_test.go). run.go owns the processes, signals and timer around it.

type event interface{ String() string }

// evStarted: rank's process is running as pid, leader of its own process group.
type evStarted struct{ rank, pid int }

// evStartFailed: rank could not be started; the loop starts no rank after it.
type evStartFailed struct {
	rank int
	err  error
}

// evExited: rank's process ended with status code, or was killed by sig (sig != 0); last
// holds its last output lines (tail), oldest first.
type evExited struct {
	rank, code int
	sig        syscall.Signal
	last       []string
}

// evInterrupted: the launcher got sig (SIGINT or SIGTERM), or its context ended (why).
type evInterrupted struct {
	sig syscall.Signal
	why string
}

// evGraceExpired: the timer of the last actStartGrace fired.
type evGraceExpired struct{}

// evHung: the progress watch (watch.go) found the job hung; report is its diagnosis, one
// line per entry, the first saying why.
type evHung struct{ report []string }

func (e evStarted) String() string { return fmt.Sprintf("started rank %d pid %d", e.rank, e.pid) }
func (e evStartFailed) String() string {
	return fmt.Sprintf("start of rank %d failed: %v", e.rank, e.err)
}
func (e evExited) String() string {
	if e.sig != 0 {
		return fmt.Sprintf("rank %d killed by %s", e.rank, sigName(e.sig))
	}
	return fmt.Sprintf("rank %d exited %d", e.rank, e.code)
}
func (e evInterrupted) String() string { return "interrupted by " + e.why }
func (evGraceExpired) String() string  { return "grace expired" }
func (evHung) String() string          { return "hung" }

type action interface{ String() string }

// actPrint: write line (no newline) to the launcher's stderr.
type actPrint struct{ line string }

// actSignal: send sig to the process group of rank (led by pid).
type actSignal struct {
	rank, pid int
	sig       syscall.Signal
}

// actStartGrace: deliver evGraceExpired after d.
type actStartGrace struct{ d time.Duration }

// actFinish: every started rank has been reaped. The loop sweeps each rank's process group
// with SIGKILL (so no grandchild outlives the job), drains output, and exits with code.
type actFinish struct{ code int }

func (a actPrint) String() string { return "print " + a.line }
func (a actSignal) String() string {
	return fmt.Sprintf("signal rank %d pid %d %s", a.rank, a.pid, sigName(a.sig))
}
func (a actStartGrace) String() string { return fmt.Sprintf("grace %v", a.d) }
func (a actFinish) String() string     { return fmt.Sprintf("finish %d", a.code) }

// sigName is a signal's name: SIGKILL, SIGSEGV, …, or "signal N" for one without a name.
func sigName(s syscall.Signal) string {
	if n := unix.SignalName(s); n != "" {
		return n
	}
	return fmt.Sprintf("signal %d", int(s))
}

// howEnded says how a rank's process ended: "exited 3", "killed by SIGTERM".
func howEnded(code int, sig syscall.Signal) string {
	if sig != 0 {
		return "killed by " + sigName(sig)
	}
	return fmt.Sprintf("exited %d", code)
}

type rankState uint8

const (
	rankPending rankState = iota // not started yet
	rankRunning
	rankDone // exited, or will never start
)

type phase uint8

const (
	phaseRunning  phase = iota // no failure yet
	phaseStopping              // SIGTERM sent, grace timer running
	phaseKilling               // SIGKILL sent
	phaseFinished              // actFinish emitted
)

type supervisor struct {
	grace  time.Duration
	host   string // where the ranks run (one host)
	state  []rankState
	pid    []int
	ended  []string // how each done rank ended ("exited 0", "killed by SIGTERM", "not started")
	phase  phase
	code   int  // the job's exit code, fixed by the first failure or interrupt
	failed bool // code is fixed
}

func newSupervisor(ranks int, grace time.Duration, host string) *supervisor {
	return &supervisor{
		grace: grace,
		host:  host,
		state: make([]rankState, ranks),
		pid:   make([]int, ranks),
		ended: make([]string, ranks),
	}
}

// step applies one event and returns the actions to perform, in order.
func (s *supervisor) step(ev event) []action {
	if s.phase == phaseFinished {
		return nil
	}
	var acts []action
	switch ev := ev.(type) {
	case evStarted:
		s.state[ev.rank] = rankRunning
		s.pid[ev.rank] = ev.pid
	case evStartFailed:
		for r := ev.rank; r < len(s.state); r++ {
			if s.state[r] == rankPending {
				s.state[r] = rankDone
				s.ended[r] = "not started"
			}
		}
		if !s.failed {
			s.fail(1)
			acts = append(acts, actPrint{fmt.Sprintf("launch: rank %d: %v", ev.rank, ev.err)})
			acts = append(acts, s.others(ev.rank)...)
			acts = append(acts, s.teardown()...)
		}
	case evExited:
		s.state[ev.rank] = rankDone
		s.ended[ev.rank] = howEnded(ev.code, ev.sig)
		if (ev.code != 0 || ev.sig != 0) && !s.failed {
			// The first failure is the cause; later ones are teardown casualties.
			code, how := ev.code, fmt.Sprintf("exited with status %d", ev.code)
			if ev.sig != 0 {
				code, how = 128+int(ev.sig), fmt.Sprintf("was killed by signal %d (%s)", int(ev.sig), sigName(ev.sig))
			}
			s.fail(code)
			acts = append(acts, actPrint{fmt.Sprintf("launch: rank %d (pid %d on %s) %s", ev.rank, s.pid[ev.rank], s.host, how)})
			acts = append(acts, lastLines(ev.rank, ev.last)...)
			acts = append(acts, s.others(ev.rank)...)
			acts = append(acts, s.teardown()...)
		}
	case evHung:
		if !s.failed && s.phase == phaseRunning {
			s.fail(ExitHung)
			for _, l := range ev.report {
				acts = append(acts, actPrint{l})
			}
			acts = append(acts, s.teardown()...)
		}
	case evInterrupted:
		switch {
		case s.phase == phaseRunning:
			s.fail(128 + int(ev.sig))
			acts = append(acts, actPrint{fmt.Sprintf("launch: %s; stopping %s", ev.why, s.runningList())})
			acts = append(acts, s.teardown()...)
		case s.phase == phaseStopping:
			acts = append(acts, actPrint{fmt.Sprintf("launch: %s while stopping; killing %s", ev.why, s.runningList())})
			acts = append(acts, s.signalRunning(syscall.SIGKILL)...)
			s.phase = phaseKilling
		}
	case evGraceExpired:
		if s.phase == phaseStopping {
			for r, st := range s.state {
				if st == rankRunning {
					acts = append(acts, actPrint{fmt.Sprintf("launch: rank %d (pid %d) still running %v after SIGTERM; sending SIGKILL", r, s.pid[r], s.grace)})
				}
			}
			acts = append(acts, s.signalRunning(syscall.SIGKILL)...)
			s.phase = phaseKilling
		}
	}
	if s.allDone() {
		s.phase = phaseFinished
		acts = append(acts, actFinish{s.code})
	}
	return acts
}

func (s *supervisor) fail(code int) {
	s.failed, s.code = true, code
}

// teardown starts the polite half of stopping: SIGTERM every running rank's group and start
// the grace timer.
func (s *supervisor) teardown() []action {
	if s.phase != phaseRunning {
		return nil
	}
	acts := s.signalRunning(syscall.SIGTERM)
	if len(acts) > 0 {
		acts = append(acts, actStartGrace{s.grace})
	}
	s.phase = phaseStopping
	return acts
}

func (s *supervisor) signalRunning(sig syscall.Signal) []action {
	var acts []action
	for r, st := range s.state {
		if st == rankRunning {
			acts = append(acts, actSignal{r, s.pid[r], sig})
		}
	}
	return acts
}

func (s *supervisor) runningList() string {
	var rs []int
	for r, st := range s.state {
		if st == rankRunning {
			rs = append(rs, r)
		}
	}
	if len(rs) == 0 {
		return "no running ranks"
	}
	return ranksNamed(rs)
}

// lastLines repeats a failed rank's last output lines under the line that names it.
func lastLines(r int, last []string) []action {
	if len(last) == 0 {
		return []action{actPrint{fmt.Sprintf("launch: rank %d printed nothing", r)}}
	}
	acts := []action{actPrint{fmt.Sprintf("launch: last output of rank %d:", r)}}
	for _, l := range last {
		acts = append(acts, actPrint{"launch: | " + l})
	}
	return acts
}

// others is one line with the state of every rank but failed, ranks of the same state
// together: "launch: other ranks: 0, 2-7 running; 3 exited 0".
func (s *supervisor) others(failed int) []action {
	var order []string
	byState := map[string][]int{}
	for r, st := range s.state {
		if r == failed {
			continue
		}
		how := "running"
		switch st {
		case rankPending:
			how = "not started"
		case rankDone:
			how = s.ended[r]
		}
		if byState[how] == nil {
			order = append(order, how)
		}
		byState[how] = append(byState[how], r)
	}
	if len(order) == 0 {
		return nil
	}
	parts := make([]string, len(order))
	for i, how := range order {
		parts[i] = rankList(byState[how]) + " " + how
	}
	return []action{actPrint{"launch: other ranks: " + strings.Join(parts, "; ")}}
}

// rankList writes ranks (increasing) with runs of three or more as ranges: "0, 2-7".
func rankList(rs []int) string {
	var parts []string
	for i := 0; i < len(rs); {
		j := i
		for j+1 < len(rs) && rs[j+1] == rs[j]+1 {
			j++
		}
		switch {
		case j-i >= 2:
			parts = append(parts, fmt.Sprintf("%d-%d", rs[i], rs[j]))
		case j == i+1:
			parts = append(parts, fmt.Sprint(rs[i]), fmt.Sprint(rs[j]))
		default:
			parts = append(parts, fmt.Sprint(rs[i]))
		}
		i = j + 1
	}
	return strings.Join(parts, ", ")
}

// ranksNamed is "rank 3" or "ranks 0, 2-7".
func ranksNamed(rs []int) string {
	if len(rs) == 1 {
		return fmt.Sprintf("rank %d", rs[0])
	}
	return "ranks " + rankList(rs)
}

func (s *supervisor) allDone() bool {
	for _, st := range s.state {
		if st != rankDone {
			return false
		}
	}
	return true
}
