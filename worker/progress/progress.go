// Package progress is the record through which a worker tells the launcher that it is alive
// and which collective it is in: a heartbeat counter, the number of collectives the rank has
// entered, and the name and group of the last one. Each rank overwrites one key of the job's
// rendezvous store (Key) about once a second; the launcher reads them to tell a hung job from
// a busy one and to say who is waiting for whom. The worker writes it (worker/progress.go),
// the launcher reads it (launch/watch.go). It is a leaf: no cgo, no comm, no I/O.
package progress

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// EnvHeartbeat is set by the launcher to the heartbeat period (Go duration syntax). A worker
// publishes its progress only when it is set: under mpirun or Slurm nobody reads it.
const EnvHeartbeat = "MOERUN_HEARTBEAT"

// Period is the heartbeat period for a job whose --timeout is timeout: a second, or a
// quarter of the timeout when that is shorter, so that a stop is seen well within it.
func Period(timeout time.Duration) time.Duration {
	return max(min(time.Second, timeout/4), 10*time.Millisecond)
}

// Key is the store key of rank's record.
func Key(rank int) string { return "moerun/progress/" + strconv.Itoa(rank) }

// Record is one rank's progress.
type Record struct {
	// Beat counts the records written; it changes at every heartbeat.
	Beat uint64
	// Seq counts the collectives the rank has entered: the current or last one is #Seq.
	Seq uint64
	// In: the rank is inside collective #Seq (it entered it and has not come out of it
	// successfully; a collective that failed leaves the rank in it).
	In bool
	// Op and Group name collective #Seq ("all_gather_v", "dp"); empty while Seq is 0.
	Op, Group string
	// Closed: the rank has left the job (its communicators are closed) and writes no more.
	Closed bool
}

// Step is the rank's position, increasing whenever it enters a collective or comes out of
// one: the launcher calls a change of Step progress.
func (r Record) Step() uint64 {
	if r.In {
		return 2*r.Seq - 1
	}
	return 2 * r.Seq
}

// Where names collective #Seq as the launcher reports it: "#17 all_gather_v on dp".
func (r Record) Where() string {
	if r.Seq == 0 {
		return "#0 (no collective yet)"
	}
	return fmt.Sprintf("#%d %s on %s", r.Seq, r.Op, r.Group)
}

// Marshal is the record as stored: "beat=3 seq=17 in=1 op=all_gather_v group=dp", with
// " closed" at the end once the rank has left.
func (r Record) Marshal() []byte {
	in := 0
	if r.In {
		in = 1
	}
	s := fmt.Sprintf("beat=%d seq=%d in=%d op=%s group=%s", r.Beat, r.Seq, in, word(r.Op), word(r.Group))
	if r.Closed {
		s += " closed"
	}
	return []byte(s)
}

// word keeps a field one non-empty word, so that the record splits back into its fields.
func word(s string) string {
	if s == "" {
		return "-"
	}
	return strings.Map(func(r rune) rune {
		if r <= ' ' || r == '=' {
			return '_'
		}
		return r
	}, s)
}

// none undoes word's "-" for an empty field.
func none(v string) string {
	if v == "-" {
		return ""
	}
	return v
}

// Parse reads a record written by Marshal. Unknown fields are ignored, so that a later
// worker may add some.
func Parse(b []byte) (Record, error) {
	var r Record
	seen := 0
	for _, f := range strings.Fields(string(b)) {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			r.Closed = r.Closed || f == "closed"
			continue
		}
		var err error
		switch k {
		case "beat":
			r.Beat, err = strconv.ParseUint(v, 10, 64)
			seen++
		case "seq":
			r.Seq, err = strconv.ParseUint(v, 10, 64)
			seen++
		case "in":
			r.In = v == "1"
		case "op":
			r.Op = none(v)
		case "group":
			r.Group = none(v)
		}
		if err != nil {
			return Record{}, fmt.Errorf("progress record %q: %s: %w", b, k, err)
		}
	}
	if seen < 2 {
		return Record{}, fmt.Errorf("progress record %q: expected beat= and seq=", b)
	}
	if r.In && r.Seq == 0 {
		return Record{}, fmt.Errorf("progress record %q: inside collective #0", b)
	}
	return r, nil
}
