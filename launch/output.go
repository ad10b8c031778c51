package launch

import (
	"bufio"
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

// pump copies r to s line by line, each line prefixed and written with one Write. A last
// line without a newline is flushed with one at EOF. It returns when r ends or fails;
// write errors are ignored (a closed stdout must not stop the job).
func pump(r io.Reader, prefix string, s io.Writer) error {
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
