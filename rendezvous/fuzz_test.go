package rendezvous

import (
	"bytes"
	"errors"
	"io"
	"runtime"
	"testing"
)

// FuzzDecode feeds arbitrary bytes to every decoder a peer can reach: request frames (the
// server's side), response frames (the client's), and both sides of the token proof. None
// may panic, none may accept what breaks a limit, and none may allocate much more than the
// bytes it was given (a length prefix alone costs at most one chunk). The seed corpus in
// testdata/fuzz/FuzzDecode (valid frames and hellos, and malformed ones) runs in every
// `go test`; `go test -fuzz=FuzzDecode ./rendezvous` looks for more.
func FuzzDecode(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		reqs := decodeAll(t, data, readRequest)
		resps := decodeAll(t, data, readResponse)
		runtime.ReadMemStats(&after)
		// Each body's buffer runs at most one chunk, or its own size, ahead of the bytes
		// received; frames are copied once (key to string) and headers are on the stack.
		if n, bound := after.TotalAlloc-before.TotalAlloc, uint64(8*len(data)+4*bodyChunk+64<<10); n > bound {
			t.Errorf("decoding %d bytes allocated %d bytes, want at most %d", len(data), n, bound)
		}
		for _, q := range reqs {
			if len(q.key) > MaxKeyLen || len(q.value) > MaxValueLen || q.op < opSet || q.op > opAdd {
				t.Fatalf("decoded a request that breaks the limits: %v, key %d bytes, value %d bytes", q.op, len(q.key), len(q.value))
			}
			var buf bytes.Buffer
			if err := writeRequest(&buf, q); err != nil {
				t.Fatal(err)
			}
			back, err := readRequest(&buf)
			if err != nil || back.op != q.op || back.arg != q.arg || back.key != q.key || !bytes.Equal(back.value, q.value) {
				t.Fatalf("request does not survive a round trip: %v, %v", back, err)
			}
		}
		for _, p := range resps {
			if len(p.value) > MaxValueLen {
				t.Fatalf("decoded a response of %d bytes", len(p.value))
			}
		}
		// Nobody can prove the token without holding it: the nonces are fresh.
		rw := struct {
			io.Reader
			io.Writer
		}{bytes.NewReader(data), io.Discard}
		if err := HandshakeAccept(rw, testToken, storeLabel); err == nil {
			t.Fatalf("the acceptor took %x as a proof", data)
		}
		rw.Reader = bytes.NewReader(data)
		if err := HandshakeDial(rw, testToken, storeLabel); err == nil {
			t.Fatalf("the dialer took %x as a proof", data)
		}
	})
}

// decodeAll decodes frames from data until the first error, which must be the end of the
// data, a cut frame or a refused one.
func decodeAll[T any](t *testing.T, data []byte, read func(io.Reader) (T, error)) []T {
	r := bytes.NewReader(data)
	var out []T
	for {
		v, err := read(r)
		if err != nil {
			var fe *frameError
			if err != io.EOF && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.As(err, &fe) {
				t.Errorf("decode error %v, want EOF, ErrUnexpectedEOF or a refused frame", err)
			}
			return out
		}
		out = append(out, v)
	}
}
