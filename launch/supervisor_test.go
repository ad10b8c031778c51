package launch

import (
	"errors"
	"strings"
	"syscall"
	"testing"
	"time"
)

// trace runs events through a fresh supervisor and prints each event followed by the
// actions it produced, one per line, indented.
func trace(ranks int, events []event) string {
	s := newSupervisor(ranks, 2*time.Second, "h")
	var b strings.Builder
	for _, ev := range events {
		b.WriteString("> " + ev.String() + "\n")
		for _, a := range s.step(ev) {
			b.WriteString("  " + a.String() + "\n")
		}
	}
	return b.String()
}

func started(pids ...int) []event {
	evs := make([]event, len(pids))
	for r, pid := range pids {
		evs[r] = evStarted{r, pid}
	}
	return evs
}

func exited(r, code int) event               { return evExited{rank: r, code: code} }
func killed(r int, sig syscall.Signal) event { return evExited{rank: r, sig: sig} }

var (
	sigint  = evInterrupted{syscall.SIGINT, "got SIGINT"}
	sigterm = evInterrupted{syscall.SIGTERM, "got SIGTERM"}
)

func TestSupervisor(t *testing.T) {
	cases := []struct {
		name   string
		ranks  int
		events []event
		want   string
	}{{
		name:   "all ranks exit 0",
		ranks:  2,
		events: append(started(100, 101), exited(1, 0), exited(0, 0)),
		want: `
> started rank 0 pid 100
> started rank 1 pid 101
> rank 1 exited 0
> rank 0 exited 0
  finish 0
`,
	}, {
		name:  "first failure is named, the others get SIGTERM and are not reported",
		ranks: 3,
		events: append(started(100, 101, 102),
			exited(1, 3), killed(0, syscall.SIGTERM), exited(2, 1)),
		want: `
> started rank 0 pid 100
> started rank 1 pid 101
> started rank 2 pid 102
> rank 1 exited 3
  print launch: rank 1 (pid 101 on h) exited with status 3
  print launch: rank 1 printed nothing
  print launch: other ranks: 0, 2 running
  signal rank 0 pid 100 SIGTERM
  signal rank 2 pid 102 SIGTERM
  grace 2s
> rank 0 killed by SIGTERM
> rank 2 exited 1
  finish 3
`,
	}, {
		name:   "killed by a signal exits 128+n",
		ranks:  2,
		events: append(started(100, 101), killed(1, syscall.SIGKILL), killed(0, syscall.SIGTERM)),
		want: `
> started rank 0 pid 100
> started rank 1 pid 101
> rank 1 killed by SIGKILL
  print launch: rank 1 (pid 101 on h) was killed by signal 9 (SIGKILL)
  print launch: rank 1 printed nothing
  print launch: other ranks: 0 running
  signal rank 0 pid 100 SIGTERM
  grace 2s
> rank 0 killed by SIGTERM
  finish 137
`,
	}, {
		name:  "a rank that ignores SIGTERM is killed after the grace period",
		ranks: 3,
		events: append(started(100, 101, 102),
			exited(0, 1), killed(2, syscall.SIGTERM), evGraceExpired{}, killed(1, syscall.SIGKILL)),
		want: `
> started rank 0 pid 100
> started rank 1 pid 101
> started rank 2 pid 102
> rank 0 exited 1
  print launch: rank 0 (pid 100 on h) exited with status 1
  print launch: rank 0 printed nothing
  print launch: other ranks: 1, 2 running
  signal rank 1 pid 101 SIGTERM
  signal rank 2 pid 102 SIGTERM
  grace 2s
> rank 2 killed by SIGTERM
> grace expired
  print launch: rank 1 (pid 101) still running 2s after SIGTERM; sending SIGKILL
  signal rank 1 pid 101 SIGKILL
> rank 1 killed by SIGKILL
  finish 1
`,
	}, {
		name:   "ranks that finished are not signalled",
		ranks:  3,
		events: append(started(100, 101, 102), exited(0, 0), exited(2, 4), exited(1, 0)),
		want: `
> started rank 0 pid 100
> started rank 1 pid 101
> started rank 2 pid 102
> rank 0 exited 0
> rank 2 exited 4
  print launch: rank 2 (pid 102 on h) exited with status 4
  print launch: rank 2 printed nothing
  print launch: other ranks: 0 exited 0; 1 running
  signal rank 1 pid 101 SIGTERM
  grace 2s
> rank 1 exited 0
  finish 4
`,
	}, {
		name:   "the last rank failing finishes at once",
		ranks:  2,
		events: append(started(100, 101), exited(0, 0), exited(1, 2), evGraceExpired{}),
		want: `
> started rank 0 pid 100
> started rank 1 pid 101
> rank 0 exited 0
> rank 1 exited 2
  print launch: rank 1 (pid 101 on h) exited with status 2
  print launch: rank 1 printed nothing
  print launch: other ranks: 0 exited 0
  finish 2
> grace expired
`,
	}, {
		name:   "SIGINT forwards SIGTERM and exits 130",
		ranks:  2,
		events: append(started(100, 101), sigint, killed(0, syscall.SIGTERM), exited(1, 1)),
		want: `
> started rank 0 pid 100
> started rank 1 pid 101
> interrupted by got SIGINT
  print launch: got SIGINT; stopping ranks 0, 1
  signal rank 0 pid 100 SIGTERM
  signal rank 1 pid 101 SIGTERM
  grace 2s
> rank 0 killed by SIGTERM
> rank 1 exited 1
  finish 130
`,
	}, {
		name:   "a second SIGINT kills",
		ranks:  2,
		events: append(started(100, 101), sigint, exited(0, 0), sigint, sigint, killed(1, syscall.SIGKILL)),
		want: `
> started rank 0 pid 100
> started rank 1 pid 101
> interrupted by got SIGINT
  print launch: got SIGINT; stopping ranks 0, 1
  signal rank 0 pid 100 SIGTERM
  signal rank 1 pid 101 SIGTERM
  grace 2s
> rank 0 exited 0
> interrupted by got SIGINT
  print launch: got SIGINT while stopping; killing rank 1
  signal rank 1 pid 101 SIGKILL
> interrupted by got SIGINT
> rank 1 killed by SIGKILL
  finish 130
`,
	}, {
		name:   "SIGTERM exits 143",
		ranks:  1,
		events: append(started(100), sigterm, killed(0, syscall.SIGTERM)),
		want: `
> started rank 0 pid 100
> interrupted by got SIGTERM
  print launch: got SIGTERM; stopping rank 0
  signal rank 0 pid 100 SIGTERM
  grace 2s
> rank 0 killed by SIGTERM
  finish 143
`,
	}, {
		name:   "an interrupt during a failure's teardown kills but keeps the cause",
		ranks:  2,
		events: append(started(100, 101), exited(0, 5), sigint, killed(1, syscall.SIGKILL)),
		want: `
> started rank 0 pid 100
> started rank 1 pid 101
> rank 0 exited 5
  print launch: rank 0 (pid 100 on h) exited with status 5
  print launch: rank 0 printed nothing
  print launch: other ranks: 1 running
  signal rank 1 pid 101 SIGTERM
  grace 2s
> interrupted by got SIGINT
  print launch: got SIGINT while stopping; killing rank 1
  signal rank 1 pid 101 SIGKILL
> rank 1 killed by SIGKILL
  finish 5
`,
	}, {
		name:   "a start failure stops the ranks already started",
		ranks:  4,
		events: append(started(100, 101), evStartFailed{2, errors.New("fork: no memory")}, exited(0, 0), killed(1, syscall.SIGTERM)),
		want: `
> started rank 0 pid 100
> started rank 1 pid 101
> start of rank 2 failed: fork: no memory
  print launch: rank 2: fork: no memory
  print launch: other ranks: 0, 1 running; 3 not started
  signal rank 0 pid 100 SIGTERM
  signal rank 1 pid 101 SIGTERM
  grace 2s
> rank 0 exited 0
> rank 1 killed by SIGTERM
  finish 1
`,
	}, {
		name:   "rank 0 failing to start finishes at once",
		ranks:  2,
		events: []event{evStartFailed{0, errors.New("permission denied")}},
		want: `
> start of rank 0 failed: permission denied
  print launch: rank 0: permission denied
  print launch: other ranks: 1 not started
  finish 1
`,
	}, {
		name:  "a failure is reported with its last output and the state of every other rank",
		ranks: 6,
		events: append(started(100, 101, 102, 103, 104, 105), exited(3, 0),
			evExited{rank: 1, code: 3, last: []string{"step 1", "worker: rank 1: boom"}},
			killed(0, syscall.SIGTERM), exited(2, 1), exited(4, 1), exited(5, 1)),
		want: `
> started rank 0 pid 100
> started rank 1 pid 101
> started rank 2 pid 102
> started rank 3 pid 103
> started rank 4 pid 104
> started rank 5 pid 105
> rank 3 exited 0
> rank 1 exited 3
  print launch: rank 1 (pid 101 on h) exited with status 3
  print launch: last output of rank 1:
  print launch: | step 1
  print launch: | worker: rank 1: boom
  print launch: other ranks: 0, 2, 4, 5 running; 3 exited 0
  signal rank 0 pid 100 SIGTERM
  signal rank 2 pid 102 SIGTERM
  signal rank 4 pid 104 SIGTERM
  signal rank 5 pid 105 SIGTERM
  grace 2s
> rank 0 killed by SIGTERM
> rank 2 exited 1
> rank 4 exited 1
> rank 5 exited 1
  finish 3
`,
	}, {
		name:   "a hang is reported, stops the job and exits 124",
		ranks:  3,
		events: append(started(100, 101, 102), evHung{[]string{"launch: job hung", "launch: #3 barrier on world: ranks 0, 2 waiting in it; rank 1 never entered it"}}, killed(0, syscall.SIGTERM), killed(1, syscall.SIGTERM), sigint, killed(2, syscall.SIGKILL)),
		want: `
> started rank 0 pid 100
> started rank 1 pid 101
> started rank 2 pid 102
> hung
  print launch: job hung
  print launch: #3 barrier on world: ranks 0, 2 waiting in it; rank 1 never entered it
  signal rank 0 pid 100 SIGTERM
  signal rank 1 pid 101 SIGTERM
  signal rank 2 pid 102 SIGTERM
  grace 2s
> rank 0 killed by SIGTERM
> rank 1 killed by SIGTERM
> interrupted by got SIGINT
  print launch: got SIGINT while stopping; killing rank 2
  signal rank 2 pid 102 SIGKILL
> rank 2 killed by SIGKILL
  finish 124
`,
	}, {
		name:   "a hang found while stopping is not reported",
		ranks:  2,
		events: append(started(100, 101), exited(0, 2), evHung{[]string{"launch: job hung"}}, exited(1, 1)),
		want: `
> started rank 0 pid 100
> started rank 1 pid 101
> rank 0 exited 2
  print launch: rank 0 (pid 100 on h) exited with status 2
  print launch: rank 0 printed nothing
  print launch: other ranks: 1 running
  signal rank 1 pid 101 SIGTERM
  grace 2s
> hung
> rank 1 exited 1
  finish 2
`,
	}, {
		name:   "a grace timer outside teardown is ignored",
		ranks:  1,
		events: append(started(100), evGraceExpired{}, exited(0, 0)),
		want: `
> started rank 0 pid 100
> grace expired
> rank 0 exited 0
  finish 0
`,
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := trace(tc.ranks, tc.events)
			if want := strings.TrimPrefix(tc.want, "\n"); got != want {
				t.Errorf("trace:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}

// TestSupervisorFinishesOnce checks, over every order in which three ranks can exit
// (cleanly or not), that exactly one finish is emitted, after the last exit, and that
// its code is that of the first failure.
func TestSupervisorFinishesOnce(t *testing.T) {
	outcomes := []event{exited(0, 0), exited(0, 7), killed(0, syscall.SIGSEGV)}
	codes := []int{0, 7, 128 + 11}
	perms := [][]int{{0, 1, 2}, {0, 2, 1}, {1, 0, 2}, {1, 2, 0}, {2, 0, 1}, {2, 1, 0}}
	for _, perm := range perms {
		for o0 := range outcomes {
			for o1 := range outcomes {
				for o2 := range outcomes {
					os := []int{o0, o1, o2}
					s := newSupervisor(3, time.Second, "h")
					for r := range 3 {
						s.step(evStarted{r, 100 + r})
					}
					wantCode := 0
					finishes := 0
					for i, r := range perm {
						ev := outcomes[os[r]]
						switch e := ev.(type) {
						case evExited:
							e.rank = r
							ev = e
						}
						if wantCode == 0 {
							wantCode = codes[os[r]]
						}
						for _, a := range s.step(ev) {
							if f, ok := a.(actFinish); ok {
								finishes++
								if i != len(perm)-1 {
									t.Errorf("perm %v outcomes %v: finish after %d exits", perm, os, i+1)
								}
								if f.code != wantCode {
									t.Errorf("perm %v outcomes %v: finish %d, want %d", perm, os, f.code, wantCode)
								}
							}
						}
					}
					if finishes != 1 {
						t.Errorf("perm %v outcomes %v: %d finishes, want 1", perm, os, finishes)
					}
				}
			}
		}
	}
}

func TestRankList(t *testing.T) {
	for _, tc := range []struct {
		rs   []int
		want string
	}{
		{[]int{3}, "rank 3"},
		{[]int{0, 1}, "ranks 0, 1"},
		{[]int{0, 1, 2}, "ranks 0-2"},
		{[]int{0, 2, 3, 4, 5, 6, 7}, "ranks 0, 2-7"},
		{[]int{1, 2, 4, 5, 6, 9}, "ranks 1, 2, 4-6, 9"},
	} {
		if got := ranksNamed(tc.rs); got != tc.want {
			t.Errorf("ranksNamed(%v) = %q, want %q", tc.rs, got, tc.want)
		}
	}
}
