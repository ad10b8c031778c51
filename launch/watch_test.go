package launch

import (
	"strings"
	"testing"
	"time"

	"github.com/moerun/moerun/worker/progress"
)

// watchRun drives a watchdog of len(states[0]) ranks through polls one second apart: at
// poll i rank r's record is states[i][r] ("" for none; "x" for an exited rank). It returns
// the poll at which the watch fired (-1 for never) and its report.
func watchRun(t *testing.T, timeout time.Duration, states [][]string, procs map[int]string) (int, string) {
	t.Helper()
	w := newWatchdog(len(states[0]), timeout)
	t0 := time.Unix(1000, 0)
	info := func(r int) (int, string) { return 100 + r, procs[r] }
	fired := -1
	var report []string
	for i, polls := range states {
		now := t0.Add(time.Duration(i) * time.Second)
		for r, st := range polls {
			switch st {
			case "x":
				w.exited(r)
			case "":
				w.observe(now, r, nil, false)
			default:
				w.observe(now, r, []byte(st), true)
			}
		}
		if lines := w.check(now, info); lines != nil {
			if fired >= 0 {
				t.Fatalf("the watch fired twice, at polls %d and %d", fired, i)
			}
			fired, report = i, lines
		}
	}
	if fired < 0 {
		return -1, ""
	}
	return fired, strings.Join(report, "\n") + "\n"
}

// rec is a progress record: beat, then the collective "17 all_reduce world" with "in" when
// the rank is inside it, "closed" when it has left.
func rec(beat uint64, where string) string {
	r := progress.Record{Beat: beat}
	f := strings.Fields(where)
	if len(f) >= 3 {
		var seq uint64
		for _, c := range f[0] {
			seq = seq*10 + uint64(c-'0')
		}
		r.Seq, r.Op, r.Group = seq, f[1], f[2]
	}
	for _, x := range f {
		r.In = r.In || x == "in"
		r.Closed = r.Closed || x == "closed"
	}
	return string(r.Marshal())
}

func TestWatchdog(t *testing.T) {
	const timeout = 3 * time.Second
	cases := []struct {
		name   string
		states [][]string
		procs  map[int]string
		fired  int
		want   string
	}{{
		name:   "a program that publishes nothing is never judged",
		states: [][]string{{"", ""}, {"", ""}, {"", ""}, {"", ""}, {"", ""}, {"", ""}},
		fired:  -1,
	}, {
		name: "ranks busy outside collectives are not hung, however long",
		states: [][]string{
			{rec(1, "5 all_reduce world"), rec(1, "5 all_reduce world")},
			{rec(2, "5 all_reduce world"), rec(2, "5 all_reduce world")},
			{rec(3, "5 all_reduce world"), rec(3, "5 all_reduce world")},
			{rec(4, "5 all_reduce world"), rec(4, "5 all_reduce world")},
			{rec(5, "5 all_reduce world"), rec(5, "5 all_reduce world")},
			{rec(6, "5 all_reduce world"), rec(6, "5 all_reduce world")},
		},
		fired: -1,
	}, {
		name: "progress of any rank holds the watch off",
		states: [][]string{
			{rec(1, "5 barrier world in"), rec(1, "4 barrier world")},
			{rec(2, "5 barrier world in"), rec(2, "4 barrier world")},
			{rec(3, "5 barrier world in"), rec(3, "4 barrier world")},
			{rec(4, "6 all_reduce tp in"), rec(4, "6 all_reduce tp in")},
			{rec(5, "6 all_reduce tp in"), rec(5, "6 all_reduce tp in")},
			{rec(6, "6 all_reduce tp in"), rec(6, "6 all_reduce tp in")},
		},
		fired: -1,
	}, {
		name: "a rank stuck outside the collective the others wait in",
		states: [][]string{
			{rec(1, "19 all_reduce world in"), rec(1, "19 all_reduce world in"), rec(1, "19 all_reduce world in"), rec(1, "19 all_reduce world in")},
			{rec(2, "20 all_reduce world in"), rec(2, "20 all_reduce world in"), rec(2, "19 all_reduce world"), rec(2, "20 all_reduce world in")},
			{rec(3, "20 all_reduce world in"), rec(3, "20 all_reduce world in"), rec(3, "19 all_reduce world"), rec(3, "20 all_reduce world in")},
			{rec(4, "20 all_reduce world in"), rec(4, "20 all_reduce world in"), rec(4, "19 all_reduce world"), rec(4, "20 all_reduce world in")},
			{rec(5, "20 all_reduce world in"), rec(5, "20 all_reduce world in"), rec(5, "19 all_reduce world"), rec(5, "20 all_reduce world in")},
			{rec(6, "20 all_reduce world in"), rec(6, "20 all_reduce world in"), rec(6, "19 all_reduce world"), rec(6, "20 all_reduce world in")},
		},
		fired: 4,
		want: `launch: job hung (--timeout 3s): no rank made progress for 3s; stopping it
launch: #20 all_reduce on world: ranks 0, 1, 3 waiting in it; rank 2 never entered it
launch: rank 2 (pid 102): alive, after #19 all_reduce on world
`,
	}, {
		name: "a stopped rank: no heartbeat",
		states: [][]string{
			{rec(1, "57 all_reduce world in"), rec(1, "57 all_reduce world in"), rec(1, "57 all_reduce world in")},
			{rec(2, "58 all_reduce world in"), rec(2, "58 all_reduce world in"), rec(2, "58 all_reduce world in")},
			{rec(3, "58 all_reduce world in"), rec(3, "58 all_reduce world in"), rec(2, "58 all_reduce world in")},
			{rec(4, "58 all_reduce world in"), rec(4, "58 all_reduce world in"), rec(2, "58 all_reduce world in")},
			{rec(5, "58 all_reduce world in"), rec(5, "58 all_reduce world in"), rec(2, "58 all_reduce world in")},
			{rec(6, "58 all_reduce world in"), rec(6, "58 all_reduce world in"), rec(2, "58 all_reduce world in")},
		},
		procs: map[int]string{2: "process stopped"},
		fired: 4,
		want: `launch: job hung (--timeout 3s): no rank made progress for 3s and no heartbeat from rank 2 for 3s; stopping it
launch: #58 all_reduce on world: ranks 0, 1 waiting in it; rank 2 not heartbeating
launch: rank 2 (pid 102): no heartbeat for 3s (process stopped), last seen in #58 all_reduce on world
`,
	}, {
		name: "a rank that never wrote a record, while the others compute",
		states: [][]string{
			{rec(1, "2 split world"), ""},
			{rec(2, "2 split world"), ""},
			{rec(3, "2 split world"), ""},
			{rec(4, "2 split world"), ""},
		},
		fired: 3,
		want: `launch: job hung (--timeout 3s): no heartbeat from rank 1 for 3s; stopping it
launch: rank 1 (pid 101): no heartbeat since the watch began
launch: rank 0 (pid 100): alive, after #2 split on world
`,
	}, {
		name: "ranks that gave up waiting and closed still wait; exited ranks are not judged",
		states: [][]string{
			{rec(1, "9 barrier world in"), rec(1, "8 broadcast world"), rec(1, "9 barrier world in"), rec(1, "8 broadcast world")},
			{rec(2, "9 barrier world in closed"), rec(2, "8 broadcast world"), rec(2, "9 barrier world in"), "x"},
			{rec(2, "9 barrier world in closed"), rec(3, "8 broadcast world"), rec(3, "9 barrier world in"), "x"},
			{rec(2, "9 barrier world in closed"), rec(4, "8 broadcast world"), rec(4, "9 barrier world in"), "x"},
		},
		fired: 3,
		want: `launch: job hung (--timeout 3s): no rank made progress for 3s; stopping it
launch: #9 barrier on world: ranks 0, 2 waiting in it; rank 1 never entered it
launch: rank 1 (pid 101): alive, after #8 broadcast on world
launch: rank 3 had already exited
`,
	}, {
		name: "two DP groups: each waits in its own collective",
		// tp 2 × dp 2: rank 2 never enters #17 on dp; rank 3, its TP peer, waits in #18 on tp.
		states: [][]string{
			{rec(1, "17 all_gather_v dp in"), rec(1, "18 all_reduce tp in"), rec(1, "16 all_reduce tp"), rec(1, "18 all_reduce tp in")},
			{rec(2, "17 all_gather_v dp in"), rec(2, "18 all_reduce tp in"), rec(2, "16 all_reduce tp"), rec(2, "18 all_reduce tp in")},
			{rec(3, "17 all_gather_v dp in"), rec(3, "18 all_reduce tp in"), rec(3, "16 all_reduce tp"), rec(3, "18 all_reduce tp in")},
			{rec(4, "17 all_gather_v dp in"), rec(4, "18 all_reduce tp in"), rec(4, "16 all_reduce tp"), rec(4, "18 all_reduce tp in")},
		},
		fired: 3,
		want: `launch: job hung (--timeout 3s): no rank made progress for 3s; stopping it
launch: #17 all_gather_v on dp: rank 0 waiting in it; rank 2 never entered it
launch: #18 all_reduce on tp: ranks 1, 3 waiting in it; ranks 0, 2 never entered it
launch: rank 2 (pid 102): alive, after #16 all_reduce on tp
`,
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fired, report := watchRun(t, timeout, tc.states, tc.procs)
			if fired != tc.fired || report != tc.want {
				t.Errorf("fired at poll %d with\n%s\nwant poll %d with\n%s", fired, report, tc.fired, tc.want)
			}
		})
	}
}
