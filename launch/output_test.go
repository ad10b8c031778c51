package launch

import (
	"fmt"
	"io"
	"math/rand/v2"
	"regexp"
	"strings"
	"sync"
	"testing"
)

// chunkReader returns its data in reads of the given sizes, to cut lines anywhere.
type chunkReader struct {
	data  string
	sizes []int
}

func (r *chunkReader) Read(p []byte) (int, error) {
	if r.data == "" {
		return 0, io.EOF
	}
	n := len(r.data)
	if len(r.sizes) > 0 {
		n, r.sizes = min(n, r.sizes[0]), r.sizes[1:]
	}
	n = copy(p, r.data[:n])
	r.data = r.data[n:]
	return n, nil
}

// writes records every Write call separately.
type writes struct {
	mu sync.Mutex
	w  []string
}

func (w *writes) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.w = append(w.w, string(p))
	return len(p), nil
}

func TestPump(t *testing.T) {
	long := strings.Repeat("x", maxLine)
	cases := []struct {
		name  string
		in    string
		sizes []int
		want  []string // one entry per Write
	}{
		{"empty", "", nil, nil},
		{"lines", "a\nbb\n", nil, []string{"[3] a\n", "[3] bb\n"}},
		{"lines cut in every read", "hello\nworld\n", []int{1, 1, 3, 2, 1, 1, 1, 1, 1}, []string{"[3] hello\n", "[3] world\n"}},
		{"last line without newline", "a\ntail", nil, []string{"[3] a\n", "[3] tail\n"}},
		{"empty lines kept", "\n\nx\n", nil, []string{"[3] \n", "[3] \n", "[3] x\n"}},
		{"line of exactly maxLine", long + "\nnext\n", nil, []string{"[3] " + long + "\n", "[3] next\n"}},
		{"long line split", long + long + "yz\n", []int{1000, 70000}, []string{"[3] " + long + "\n", "[3] " + long + "\n", "[3] yz\n"}},
		{"long line without newline", long + "q", nil, []string{"[3] " + long + "\n", "[3] q\n"}},
		{"carriage returns pass", "a\r\n", nil, []string{"[3] a\r\n"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var w writes
			if err := pump(&chunkReader{tc.in, tc.sizes}, "[3] ", &w, nil); err != nil {
				t.Fatal(err)
			}
			if fmt.Sprintf("%q", w.w) != fmt.Sprintf("%q", tc.want) {
				t.Errorf("writes = %.200q\nwant     %.200q", w.w, tc.want)
			}
		})
	}
}

// lineOnly fails the test on any Write that is not exactly one line.
type lineOnly struct {
	t     *testing.T
	mu    sync.Mutex // only to read lines safely; sink must already serialise
	busy  bool
	lines []string
}

func (w *lineOnly) Write(p []byte) (int, error) {
	w.mu.Lock()
	if w.busy {
		w.t.Errorf("concurrent Write")
	}
	w.busy = true
	w.mu.Unlock()
	s := string(p)
	if strings.Count(s, "\n") != 1 || !strings.HasSuffix(s, "\n") {
		w.t.Errorf("Write of %q is not one whole line", s)
	}
	w.mu.Lock()
	w.busy = false
	w.lines = append(w.lines, s)
	w.mu.Unlock()
	return len(p), nil
}

func TestPumpsShareSinkWholeLines(t *testing.T) {
	const writers, lines = 4, 300
	dst := &lineOnly{t: t}
	s := &sink{w: dst}
	var wg sync.WaitGroup
	for r := range writers {
		pr, pw := io.Pipe()
		wg.Go(func() { pump(pr, fmt.Sprintf("[%d] ", r), s, nil) })
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(r), 1))
			var all strings.Builder
			for i := range lines {
				fmt.Fprintf(&all, "rank %d line %d %s\n", r, i, strings.Repeat("=", rng.IntN(100)))
			}
			data := all.String()
			for len(data) > 0 { // arbitrary write sizes cut lines anywhere
				n := min(len(data), 1+rng.IntN(200))
				pw.Write([]byte(data[:n]))
				data = data[n:]
			}
			pw.Close()
		})
	}
	wg.Wait()
	if len(dst.lines) != writers*lines {
		t.Fatalf("%d lines, want %d", len(dst.lines), writers*lines)
	}
	next := make([]int, writers)
	re := regexp.MustCompile(`^\[(\d)\] rank (\d) line (\d+) =*\n$`)
	for _, l := range dst.lines {
		m := re.FindStringSubmatch(l)
		if m == nil || m[1] != m[2] {
			t.Fatalf("mangled line %q", l)
		}
		var r, i int
		fmt.Sscan(m[1], &r)
		fmt.Sscan(m[3], &i)
		if i != next[r] {
			t.Fatalf("rank %d: line %d after line %d", r, i, next[r]-1)
		}
		next[r]++
	}
}

func TestPumpKeepsTail(t *testing.T) {
	var in strings.Builder
	for i := 1; i <= 13; i++ {
		fmt.Fprintf(&in, "line %d\r\n", i)
	}
	in.WriteString(strings.Repeat("y", tailWidth+5)) // cut, and no newline
	var tl tail
	if got := tl.last(); len(got) != 0 {
		t.Errorf("empty tail: %q", got)
	}
	if err := pump(strings.NewReader(in.String()), "[1] ", io.Discard, &tl); err != nil {
		t.Fatal(err)
	}
	want := []string{"line 5", "line 6", "line 7", "line 8", "line 9", "line 10", "line 11", "line 12", "line 13",
		strings.Repeat("y", tailWidth) + " …"}
	if got := tl.last(); fmt.Sprintf("%q", got) != fmt.Sprintf("%q", want) {
		t.Errorf("tail = %.300q\nwant   %.300q", got, want)
	}
}
