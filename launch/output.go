package launch

import (
	"bufio"
	"bytes"
	"io"
	"sync"
)

// maxLine is the longest line written whole; longer lines are split into pieces of this
// size, each written as a line of its own.
const maxLine = 64 << 10

// sink is one of the launcher's outputs shared by every rank. Each Write reaches the
// underlying writer whole, so lines written by different ranks never interleave.
type sink struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *sink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

// tailLines is how many of a rank's last output lines the failure report repeats, and
// tailWidth the most bytes kept of each.
const (
	tailLines = 10
	tailWidth = 512
)

// tail keeps the last tailLines lines of one rank's output, stdout and stderr together in
// the order the pumps read them. It is safe for concurrent use.
type tail struct {
	mu    sync.Mutex
	lines [tailLines]string
	n     int // lines added in all
}

// add keeps line (without its newline), cut to tailWidth bytes.
func (t *tail) add(line []byte) {
	line = bytes.TrimSuffix(line, []byte("\r"))
	s := string(line[:min(len(line), tailWidth)])
	if len(line) > tailWidth {
		s += " …"
	}
	t.mu.Lock()
	t.lines[t.n%tailLines] = s
	t.n++
	t.mu.Unlock()
}

// last returns the kept lines, oldest first.
func (t *tail) last() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	k := min(t.n, tailLines)
	out := make([]string, 0, k)
	for i := t.n - k; i < t.n; i++ {
		out = append(out, t.lines[i%tailLines])
	}
	return out
}

// pump copies r to s line by line, each line prefixed and written with one Write, and keeps
// each line in t (when not nil). A last line without a newline is flushed with one at EOF.
// It returns when r ends or fails; write errors are ignored (a closed stdout must not stop
// the job).
func pump(r io.Reader, prefix string, s io.Writer, t *tail) error {
	br := bufio.NewReaderSize(r, maxLine)
	buf := make([]byte, 0, len(prefix)+maxLine+1)
	split := false // the last piece was cut at maxLine
	for {
		line, err := br.ReadSlice('\n')
		// A newline right after a cut ends the line already written, not an empty one.
		if len(line) > 0 && !(split && len(line) == 1 && line[0] == '\n') {
			buf = append(append(buf[:0], prefix...), line...)
			if line[len(line)-1] != '\n' {
				buf = append(buf, '\n')
			}
			s.Write(buf)
			if t != nil {
				t.add(buf[len(prefix) : len(buf)-1])
			}
		}
		split = err == bufio.ErrBufferFull
		switch {
		case err == nil, split:
		case err == io.EOF:
			return nil
		default:
			return err
		}
	}
}
