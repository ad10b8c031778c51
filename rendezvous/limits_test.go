package rendezvous

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"testing/synctest"
	"time"
)

// Adversarial clients against a store on a real loopback port, with short limits. Each test
// checks three things: the bad connection is closed (our read sees the end of it, well
// before a generous read deadline), an honest client is served meanwhile, and nothing the
// bad client sent stays counted in the store.

// dialRaw connects to addr and, when token is not empty, proves it; the connection then
// speaks the wire format by hand. It is closed at cleanup.
func dialRaw(t *testing.T, addr, token string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if token != "" {
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if err := HandshakeDial(c, token, storeLabel); err != nil {
			t.Fatalf("handshake: %v", err)
		}
		c.SetDeadline(time.Time{})
	}
	return c
}

// closedByServer reads c until the server closes it, and returns what came before. It fails
// the test if that takes more than 5 s (the limits under test are far shorter).
func closedByServer(t *testing.T, c net.Conn) []byte {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("the server did not close the connection: %v", err)
	}
	return got
}

// served checks that an honest client gets an answer from the store at addr.
func served(t *testing.T, addr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	c, err := Dial(ctx, addr, testToken)
	if err != nil {
		t.Fatalf("an honest client: %v", err)
	}
	defer c.Close()
	if _, err := c.Add(ctx, "honest", 1); err != nil {
		t.Fatalf("an honest client: %v", err)
	}
}

func (s *Server) heldBytes() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.held
}

func reqHeaderBytes(o op, keyLen, valLen uint32) []byte {
	var h [reqHeaderLen]byte
	h[0] = byte(o)
	binary.BigEndian.PutUint32(h[9:], keyLen)
	binary.BigEndian.PutUint32(h[13:], valLen)
	return h[:]
}

// Garbage instead of a hello (an HTTP probe, a client of the old protocol that sends its
// token in clear, zeros) is told that it speaks another protocol and is closed.
func TestGarbageBeforeProof(t *testing.T) {
	_, addr := tcpStore(t)
	v1Hello := append(reqHeaderBytes(1, 0, uint32(len(testToken))), testToken...)
	for name, junk := range map[string][]byte{
		"http":      []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n" + strings.Repeat("x", helloLen)),
		"v1 hello":  append(v1Hello, make([]byte, helloLen)...),
		"all zeros": make([]byte, helloLen),
	} {
		t.Run(name, func(t *testing.T) {
			c := dialRaw(t, addr, "")
			// Exactly a hello's length: the server reads all of it, so it closes with a
			// FIN, not a reset that could overtake its answer.
			c.Write(junk[:helloLen])
			got := closedByServer(t, c)
			if len(got) < 1 || authCode(got[0]) != codeProtocol {
				t.Errorf("answer %q, want a challenge with codeProtocol", got)
			}
			served(t, addr)
		})
	}
}

// Slowloris before the proof: half a hello, then nothing. The connection is closed at the
// handshake limit, and honest clients are served in the meantime.
func TestStallBeforeProof(t *testing.T) {
	lim := defaultLimits
	lim.handshake = 200 * time.Millisecond
	_, addr := tcpStoreLimits(t, lim)
	c := dialRaw(t, addr, "")
	c.Write([]byte(authMagic))
	served(t, addr)
	if got := closedByServer(t, c); len(got) != 0 {
		t.Errorf("a stalled hello got %q, want nothing", got)
	}
}

// Slowloris after the proof: a frame's header announces 1 MiB and 10 bytes follow. The
// connection is closed at the frame limit, others are served meanwhile, and the store
// no longer counts the frame.
func TestStallMidFrame(t *testing.T) {
	lim := defaultLimits
	lim.frame = 200 * time.Millisecond
	s, addr := tcpStoreLimits(t, lim)
	c := dialRaw(t, addr, testToken)
	c.Write(append(reqHeaderBytes(opSet, 1, 1<<20), "k123456789"...))
	served(t, addr)
	if got := closedByServer(t, c); len(got) != 0 {
		t.Errorf("a stalled frame got %q, want nothing", got)
	}
	if n, want := s.heldBytes(), int64(len("honest")+1); n != want {
		t.Errorf("store holds %d bytes after the stalled frame, want %d (the honest counter)", n, want)
	}
}

// An authenticated client that stops reading its responses is closed at the frame limit
// rather than holding its connection's goroutines for ever.
func TestStallReadingResponses(t *testing.T) {
	lim := defaultLimits
	lim.frame = 200 * time.Millisecond
	s, addr := tcpStoreLimits(t, lim)
	s.mu.Lock() // not through Set: 32 MiB may take longer than 200 ms to send here
	s.setLocked("big", make([]byte, 32<<20))
	s.mu.Unlock()
	c := dialRaw(t, addr, testToken)
	c.(*net.TCPConn).SetReadBuffer(4 << 10)
	for range 4 { // 128 MiB asked for, none read: more than any socket buffers
		c.Write(append(reqHeaderBytes(opGet, 3, 0), "big"...))
	}
	served(t, addr)
	// Wait for the server to give up on c.
	deadline := time.Now().Add(5 * time.Second)
	for s.numConns() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the server still serves %d connections, want 0", s.numConns())
		}
		runtime.Gosched()
	}
}

func (s *Server) numConns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// The limit of connections: past it a new client is told that the store is busy, and Dial
// keeps trying until its context ends, or until a connection is freed.
func TestTooManyConnections(t *testing.T) {
	lim := defaultLimits
	lim.conns = 3
	_, addr := tcpStoreLimits(t, lim)
	ctx := t.Context()
	var clients []*Client
	for range 3 {
		c, err := Dial(ctx, addr, testToken)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		clients = append(clients, c)
	}
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	_, err := Dial(short, addr, testToken)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "the store is busy") {
		t.Errorf("Dial past the limit: err = %v; want busy, then DeadlineExceeded", err)
	}
	if _, err := clients[0].Add(ctx, "n", 1); err != nil {
		t.Errorf("a client within the limit: %v", err)
	}
	clients[2].Close()
	served(t, addr) // Dial retries until the server has let the closed one go
}

// A flood of connections that never prove anything fills only the handshake slots: past
// them new connections are closed at once, connections already proved keep working, and
// Dial gets in once slots free up.
func TestHandshakeFlood(t *testing.T) {
	lim := defaultLimits
	lim.handshakes = 2
	_, addr := tcpStoreLimits(t, lim)
	ctx := t.Context()
	inside, err := Dial(ctx, addr, testToken)
	if err != nil {
		t.Fatal(err)
	}
	defer inside.Close()
	// A round trip: the server has counted inside's proof as done.
	if _, err := inside.Add(ctx, "n", 1); err != nil {
		t.Fatal(err)
	}
	stallers := []net.Conn{dialRaw(t, addr, ""), dialRaw(t, addr, "")}
	extra := dialRaw(t, addr, "")
	if got := closedByServer(t, extra); len(got) != 0 {
		t.Errorf("a connection past the handshake slots got %q, want to be closed at once", got)
	}
	if _, err := inside.Add(ctx, "n", 1); err != nil {
		t.Errorf("a proved client during the flood: %v", err)
	}
	errc := make(chan error, 1)
	go func() {
		dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		c, err := Dial(dctx, addr, testToken)
		if err == nil {
			c.Close()
		}
		errc <- err
	}()
	for _, c := range stallers {
		c.Close()
	}
	if err := <-errc; err != nil {
		t.Errorf("Dial after the flood ended: %v", err)
	}
}

// The store's byte limit: a Set or Add that would pass it fails with "store full", a frame
// larger than the room left is refused before its body is read, and overwriting a value
// gives its room back.
func TestStoreFull(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := NewServer(testToken, nil)
		s.lim.storeBytes = 1000
		defer s.Close()
		a, b := net.Pipe()
		go s.ServeConn(b)
		c, err := NewClient(t.Context(), a, testToken)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		ctx := t.Context()
		if err := c.Set(ctx, "a", make([]byte, 599)); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Add(ctx, strings.Repeat("n", 399), 12); err == nil || !strings.Contains(err.Error(), "store full") {
			t.Errorf("Add past the limit: err = %v, want store full", err)
		}
		if got := s.heldBytes(); got != 600 {
			t.Errorf("held = %d after a refused Add, want 600", got)
		}
		if err := c.Set(ctx, "b", make([]byte, 599)); err == nil || !strings.Contains(err.Error(), "store full") {
			t.Errorf("Set past the limit: err = %v, want store full", err)
		}
		// The refused Set closed the connection (its body was never read): a fresh one.
		a, b = net.Pipe()
		go s.ServeConn(b)
		if c, err = NewClient(ctx, a, testToken); err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.Set(ctx, "a", []byte("x")); err != nil {
			t.Fatal(err)
		}
		if err := c.Set(ctx, "b", make([]byte, 599)); err != nil {
			t.Errorf("Set after room was given back: %v", err)
		}
		if got := s.heldBytes(); got != 2+600 {
			t.Errorf("held = %d, want 602 (a=x, b=599 bytes)", got)
		}
	})
}

// Waits that time out on ever new keys leave no entries behind.
func TestTimedWaitsLeaveNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, connect := pipeStore(t)
		c := mustClient(t, connect)
		for i := range 100 {
			ctx, cancel := context.WithTimeout(t.Context(), time.Second)
			if _, err := c.Wait(ctx, fmt.Sprint("never/", i)); !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Wait: %v", err)
			}
			cancel()
		}
		if n := s.numWaitKeys(); n != 0 {
			t.Errorf("%d waiting keys left after every wait ended, want 0", n)
		}
	})
}

// An authenticated connection has no deadline while idle or waiting: an hour of silence
// and a wait longer than the frame limit are both fine.
func TestIdleConnectionStays(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, connect := pipeStore(t)
		c, setter := mustClient(t, connect), mustClient(t, connect)
		time.Sleep(time.Hour)
		if err := c.Set(t.Context(), "k", []byte("v")); err != nil {
			t.Fatalf("Set after an idle hour: %v", err)
		}
		go func() {
			time.Sleep(2 * defaultLimits.frame)
			setter.Set(t.Context(), "late", []byte("v"))
		}()
		if v, err := c.Wait(t.Context(), "late"); err != nil || string(v) != "v" {
			t.Errorf("Wait longer than the frame limit = %q, %v", v, err)
		}
	})
}

// A length prefix alone costs no memory: a header announcing a 64 MiB value followed by
// 10 bytes makes the decoder allocate about a chunk, not 64 MiB.
func TestDecodeAllocatesAsBytesArrive(t *testing.T) {
	frame := append(reqHeaderBytes(opSet, 1, MaxValueLen), "k123456789"...)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	_, err := readRequest(strings.NewReader(string(frame)))
	runtime.ReadMemStats(&after)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("readRequest of a cut frame: err = %v, want ErrUnexpectedEOF", err)
	}
	if n := after.TotalAlloc - before.TotalAlloc; n > 1<<20 {
		t.Errorf("decoding a 64 MiB header with 10 bytes of body allocated %d bytes, want under 1 MiB", n)
	}
}

// fakeListener hands out conns from a channel, and errs as told.
type fakeListener struct {
	conns chan net.Conn
	errs  chan error
	done  chan struct{}
}

func (l *fakeListener) Accept() (net.Conn, error) {
	select {
	case err := <-l.errs:
		return nil, err
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}
func (l *fakeListener) Close() error {
	select {
	case <-l.done:
	default:
		close(l.done)
	}
	return nil
}
func (l *fakeListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }

// Running out of file descriptors does not stop the store: Serve waits and accepts again.
func TestServeSurvivesEMFILE(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ln := &fakeListener{conns: make(chan net.Conn), errs: make(chan error, 2), done: make(chan struct{})}
		s := NewServer(testToken, nil)
		served := make(chan error, 1)
		go func() { served <- s.Serve(ln) }()
		ln.errs <- &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
		ln.errs <- &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
		a, b := net.Pipe()
		ln.conns <- b
		c, err := NewClient(t.Context(), a, testToken)
		if err != nil {
			t.Fatalf("a client after EMFILE: %v", err)
		}
		if _, err := c.Add(t.Context(), "n", 1); err != nil {
			t.Error(err)
		}
		c.Close()
		s.Close()
		if err := <-served; err != nil {
			t.Errorf("Serve = %v, want nil after Close", err)
		}
	})
}
