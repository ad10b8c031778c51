package progress

import (
	"testing"
	"time"
)

func TestRecordRoundTrip(t *testing.T) {
	cases := []struct {
		r    Record
		text string
	}{
		{Record{Beat: 1}, "beat=1 seq=0 in=0 op=- group=-"},
		{Record{Beat: 3, Seq: 17, In: true, Op: "all_gather_v", Group: "dp"}, "beat=3 seq=17 in=1 op=all_gather_v group=dp"},
		{Record{Beat: 9, Seq: 4, Op: "barrier", Group: "world", Closed: true}, "beat=9 seq=4 in=0 op=barrier group=world closed"},
	}
	for _, tc := range cases {
		if got := string(tc.r.Marshal()); got != tc.text {
			t.Errorf("%+v: Marshal = %q, want %q", tc.r, got, tc.text)
		}
		back, err := Parse([]byte(tc.text))
		if err != nil || back != tc.r {
			t.Errorf("Parse(%q) = %+v, %v; want %+v", tc.text, back, err, tc.r)
		}
	}
	// Odd names stay one field each.
	r := Record{Beat: 1, Seq: 2, Op: "all reduce=x", Group: "g"}
	if back, err := Parse(r.Marshal()); err != nil || back.Op != "all_reduce_x" || back.Group != "g" {
		t.Errorf("odd op: %+v, %v", back, err)
	}
}

func TestParseRejects(t *testing.T) {
	for _, in := range []string{"", "beat=1", "seq=1", "beat=x seq=1", "beat=1 seq=0 in=1"} {
		if r, err := Parse([]byte(in)); err == nil {
			t.Errorf("Parse(%q) = %+v, want an error", in, r)
		}
	}
	if r, err := Parse([]byte("beat=1 seq=2 in=0 op=x group=y extra=5 future")); err != nil || r.Seq != 2 {
		t.Errorf("unknown fields: %+v, %v", r, err)
	}
}

func TestStepIncreases(t *testing.T) {
	// Entering a collective and coming out of it both advance the step.
	steps := []Record{{}, {Seq: 1, In: true}, {Seq: 1}, {Seq: 2, In: true}, {Seq: 2}, {Seq: 3, In: true}}
	for i := 1; i < len(steps); i++ {
		if steps[i].Step() <= steps[i-1].Step() {
			t.Errorf("step of %+v (%d) is not past %+v (%d)", steps[i], steps[i].Step(), steps[i-1], steps[i-1].Step())
		}
	}
}

func TestPeriod(t *testing.T) {
	for _, tc := range []struct{ timeout, want time.Duration }{
		{120 * time.Second, time.Second},
		{3 * time.Second, 750 * time.Millisecond},
		{time.Millisecond, 10 * time.Millisecond},
	} {
		if got := Period(tc.timeout); got != tc.want {
			t.Errorf("Period(%v) = %v, want %v", tc.timeout, got, tc.want)
		}
	}
}
