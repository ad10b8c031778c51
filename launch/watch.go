package launch

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/moerun/moerun/worker/progress"
)

// The watch tells a hung job from a busy one. Workers publish a progress record to the
// store about once a second (package progress: a heartbeat counter and the collective they
// are in); run.go reads every rank's record and feeds it here with the time it read it. Like
// the supervisor, the watch does no I/O and reads no clock.
//
// The job is hung when, for --timeout,
//   - no rank has made progress (entered or come out of a collective) while some rank is
//     waiting inside one: the workers' own bound on a wait for a peer, seen from outside,
//     where it can say who never came; or
//   - a running rank has written no heartbeat (it is stopped, or frozen).
//
// Ranks that are all busy outside collectives (computing, writing files) are not hung,
// however long they take. The watch arms at the first record it sees, so a program that
// publishes none (not a moerun worker) is never judged.

// rankWatch is what the launcher knows of one rank's progress.
type rankWatch struct {
	rec    progress.Record
	seen   bool      // a record was read
	beatAt time.Time // when rec.Beat last changed, on the launcher's clock
	stepAt time.Time // when rec.Step() last changed
	gone   bool      // the process has exited
}

type watchdog struct {
	timeout time.Duration
	ranks   []rankWatch
	armed   bool
	armedAt time.Time
	fired   bool
}

func newWatchdog(ranks int, timeout time.Duration) *watchdog {
	return &watchdog{timeout: timeout, ranks: make([]rankWatch, ranks)}
}

// observe takes rank r's record as read from the store at now (ok false: none yet).
// Records that do not parse are ignored.
func (w *watchdog) observe(now time.Time, r int, value []byte, ok bool) {
	if !ok || r < 0 || r >= len(w.ranks) {
		return
	}
	rec, err := progress.Parse(value)
	if err != nil {
		return
	}
	if !w.armed {
		w.armed, w.armedAt = true, now
	}
	rw := &w.ranks[r]
	if !rw.seen || rec.Beat != rw.rec.Beat {
		rw.beatAt = now
	}
	if !rw.seen || rec.Step() != rw.rec.Step() {
		rw.stepAt = now
	}
	rw.rec, rw.seen = rec, true
}

// exited marks rank r's process gone: it is no longer judged.
func (w *watchdog) exited(r int) {
	if r >= 0 && r < len(w.ranks) {
		w.ranks[r].gone = true
	}
}

// procInfo gives a rank's pid and, when it says something, the state of its process
// ("stopped", from /proc); run.go reads it only once the job is found hung.
type procInfo func(rank int) (pid int, state string)

// check returns the diagnosis, one line per entry, when the job is hung at now, else nil.
// It fires once.
func (w *watchdog) check(now time.Time, info procInfo) []string {
	if !w.armed || w.fired || w.timeout <= 0 {
		return nil
	}
	lastStep := w.armedAt
	var silent []int
	var silentFor time.Duration
	waiting := false
	for r := range w.ranks {
		rw := &w.ranks[r]
		if rw.seen && rw.stepAt.After(lastStep) {
			lastStep = rw.stepAt
		}
		if rw.gone {
			continue
		}
		waiting = waiting || rw.seen && rw.rec.In
		if q := w.quiet(now, r); q >= w.timeout {
			if len(silent) == 0 || q < silentFor {
				silentFor = q
			}
			silent = append(silent, r)
		}
	}
	stalled := waiting && now.Sub(lastStep) >= w.timeout
	if !stalled && len(silent) == 0 {
		return nil
	}
	w.fired = true
	var why []string
	if stalled {
		why = append(why, "no rank made progress for "+roundD(now.Sub(lastStep)))
	}
	if len(silent) > 0 {
		why = append(why, fmt.Sprintf("no heartbeat from %s for %s", ranksNamed(silent), roundD(silentFor)))
	}
	report := []string{fmt.Sprintf("launch: job hung (--timeout %v): %s; stopping it", w.timeout, strings.Join(why, " and "))}
	return append(report, w.diagnose(now, info)...)
}

// quiet is how long live rank r has gone without a heartbeat: since its last one, or since
// the watch armed if it never wrote one. A rank that closed its job writes no more and is
// not quiet.
func (w *watchdog) quiet(now time.Time, r int) time.Duration {
	rw := &w.ranks[r]
	switch {
	case rw.gone || rw.seen && rw.rec.Closed:
		return 0
	case !rw.seen:
		return now.Sub(w.armedAt)
	}
	return now.Sub(rw.beatAt)
}

// collective names one collective of the job by its sequence number.
type collective struct {
	seq       uint64
	op, group string
}

// diagnose says, for each collective that ranks wait in, which ranks wait there and which
// never entered it (they are behind) or send no heartbeat; then where every other rank is.
func (w *watchdog) diagnose(now time.Time, info procInfo) []string {
	silent := func(r int) bool { return w.quiet(now, r) >= w.timeout }
	waiters := map[collective][]int{}
	var colls []collective
	for r, rw := range w.ranks {
		if rw.gone || !rw.seen || !rw.rec.In || silent(r) {
			continue
		}
		c := collective{rw.rec.Seq, rw.rec.Op, rw.rec.Group}
		if waiters[c] == nil {
			colls = append(colls, c)
		}
		waiters[c] = append(waiters[c], r)
	}
	slices.SortFunc(colls, func(a, b collective) int {
		return cmp.Or(cmp.Compare(a.seq, b.seq), strings.Compare(a.op, b.op), strings.Compare(a.group, b.group))
	})
	var lines []string
	for _, c := range colls {
		var behind, quiet []int
		for r, rw := range w.ranks {
			switch {
			case rw.gone:
			case silent(r):
				quiet = append(quiet, r)
			case rw.rec.Seq < c.seq:
				behind = append(behind, r)
			}
		}
		rs := waiters[c]
		line := fmt.Sprintf("launch: #%d %s on %s: %s waiting in it", c.seq, c.op, c.group, ranksNamed(rs))
		if len(behind) > 0 {
			line += fmt.Sprintf("; %s never entered it", ranksNamed(behind))
		}
		if len(quiet) > 0 {
			line += fmt.Sprintf("; %s not heartbeating", ranksNamed(quiet))
		}
		lines = append(lines, line)
	}
	// Where every rank that is not waiting is: silent ones one by one (with their pid, for
	// a debugger), the others grouped by what they do.
	var order []string
	byWhere := map[string][]int{}
	var gone []int
	for r, rw := range w.ranks {
		switch {
		case rw.gone:
			gone = append(gone, r)
			continue
		case silent(r):
			pid, state := info(r)
			what := "no heartbeat since the watch began"
			if rw.seen {
				what = fmt.Sprintf("no heartbeat for %s", roundD(now.Sub(rw.beatAt)))
			}
			if state != "" {
				what += " (" + state + ")"
			}
			if rw.seen {
				what += ", last seen " + where(rw.rec)
			}
			lines = append(lines, fmt.Sprintf("launch: rank %d (pid %d): %s", r, pid, what))
			continue
		case rw.rec.In:
			continue
		}
		what := "alive, " + where(rw.rec)
		if rw.rec.Closed {
			what = "left the job " + where(rw.rec)
		}
		if byWhere[what] == nil {
			order = append(order, what)
		}
		byWhere[what] = append(byWhere[what], r)
	}
	for _, what := range order {
		rs := ranksWithPid(byWhere[what], info)
		lines = append(lines, fmt.Sprintf("launch: %s: %s", rs, what))
	}
	if len(gone) > 0 {
		lines = append(lines, fmt.Sprintf("launch: %s had already exited", ranksNamed(gone)))
	}
	return lines
}

// ranksWithPid names ranks for a line of their own: with the pid when there is one rank.
func ranksWithPid(rs []int, info procInfo) string {
	if len(rs) == 1 {
		pid, _ := info(rs[0])
		return fmt.Sprintf("rank %d (pid %d)", rs[0], pid)
	}
	return ranksNamed(rs)
}

// where places a rank by its record: "in #17 all_gather_v on dp", "after #16 all_reduce on
// tp", "before any collective".
func where(r progress.Record) string {
	switch {
	case r.Seq == 0:
		return "before any collective"
	case r.In:
		return "in " + r.Where()
	}
	return "after " + r.Where()
}

// roundD prints a duration to a tenth of a second.
func roundD(d time.Duration) string {
	return d.Round(100 * time.Millisecond).String()
}
