package rendezvous

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"
)

const testToken = "0123456789abcdef0123456789abcdef"

// pipeStore starts a server and returns a function that connects a new client to it over
// net.Pipe, so it works inside a synctest bubble. The server is closed at cleanup.
func pipeStore(t *testing.T) (*Server, func(token string) (*Client, error)) {
	t.Helper()
	s := NewServer(testToken, nil)
	t.Cleanup(func() { s.Close() })
	connect := func(token string) (*Client, error) {
		a, b := net.Pipe()
		go s.ServeConn(b)
		c, err := NewClient(t.Context(), a, token)
		if err == nil {
			t.Cleanup(func() { c.Close() })
		}
		return c, err
	}
	return s, connect
}

func mustClient(t *testing.T, connect func(string) (*Client, error)) *Client {
	t.Helper()
	c, err := connect(testToken)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// tcpStore serves a store on a loopback port until cleanup and returns its address.
func tcpStore(t *testing.T) (*Server, string) {
	t.Helper()
	return tcpStoreLimits(t, defaultLimits)
}

// tcpStoreLimits is tcpStore with other limits.
func tcpStoreLimits(t *testing.T, lim limits) (*Server, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer(testToken, nil)
	s.lim = lim
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()
	t.Cleanup(func() {
		s.Close()
		if err := <-served; err != nil {
			t.Errorf("Serve after Close = %v, want nil", err)
		}
	})
	return s, ln.Addr().String()
}

func TestNewToken(t *testing.T) {
	a, err := NewToken()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := NewToken()
	if len(a) != 32 || strings.Trim(a, "0123456789abcdef") != "" {
		t.Errorf("NewToken() = %q, want 32 hex digits", a)
	}
	if a == b {
		t.Errorf("two tokens are equal: %q", a)
	}
}

func TestSetGetWaitAdd(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, connect := pipeStore(t)
		c := mustClient(t, connect)
		ctx := t.Context()

		if v, ok, err := c.Get(ctx, "missing"); err != nil || ok || v != nil {
			t.Errorf("Get(missing) = %q, %v, %v; want nil, false, nil", v, ok, err)
		}
		if err := c.Set(ctx, "k", []byte("v1")); err != nil {
			t.Fatal(err)
		}
		if v, ok, err := c.Get(ctx, "k"); err != nil || !ok || string(v) != "v1" {
			t.Errorf("Get(k) = %q, %v, %v; want v1, true, nil", v, ok, err)
		}
		if v, err := c.Wait(ctx, "k"); err != nil || string(v) != "v1" {
			t.Errorf("Wait(k) = %q, %v; want v1", v, err)
		}
		if err := c.Set(ctx, "empty", nil); err != nil {
			t.Fatal(err)
		}
		if v, ok, err := c.Get(ctx, "empty"); err != nil || !ok || len(v) != 0 {
			t.Errorf("Get(empty) = %q, %v, %v; want empty, true, nil", v, ok, err)
		}

		adds := []struct {
			key   string
			delta int64
			want  int64
		}{
			{"n", 1, 1},
			{"n", 5, 6},
			{"n", -10, -4},
			{"n", 0, -4},
		}
		for _, a := range adds {
			if got, err := c.Add(ctx, a.key, a.delta); err != nil || got != a.want {
				t.Errorf("Add(%s, %d) = %d, %v; want %d", a.key, a.delta, got, err, a.want)
			}
		}
		if v, _, _ := c.Get(ctx, "n"); string(v) != "-4" {
			t.Errorf("Get(n) = %q, want the decimal counter -4", v)
		}
		if err := c.Set(ctx, "m", []byte("41")); err != nil {
			t.Fatal(err)
		}
		if got, err := c.Add(ctx, "m", 1); err != nil || got != 42 {
			t.Errorf("Add(m, 1) after Set(m, 41) = %d, %v; want 42", got, err)
		}
		if _, err := c.Add(ctx, "k", 1); err == nil || !strings.Contains(err.Error(), "not a decimal int64") {
			t.Errorf("Add on a non-counter: err = %v", err)
		}
		c.Set(ctx, "max", []byte("9223372036854775807"))
		if _, err := c.Add(ctx, "max", 1); err == nil || !strings.Contains(err.Error(), "overflows") {
			t.Errorf("Add past MaxInt64: err = %v", err)
		}
		// The connection survives server-side errors.
		if _, err := c.Add(ctx, "n", 4); err != nil {
			t.Errorf("Add after an error: %v", err)
		}
		big := make([]byte, 1<<20)
		big[len(big)-1] = 7
		if err := c.Set(ctx, "big", big); err != nil {
			t.Fatal(err)
		}
		if v, _, err := c.Get(ctx, "big"); err != nil || len(v) != len(big) || v[len(v)-1] != 7 {
			t.Errorf("Get(big): %d bytes, %v", len(v), err)
		}
	})
}

func TestWaitWokenBySet(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, connect := pipeStore(t)
		waiter, setter := mustClient(t, connect), mustClient(t, connect)
		type result struct {
			v   []byte
			err error
		}
		got := make(chan result, 2)
		for range 2 {
			c := mustClient(t, connect)
			go func() {
				v, err := c.Wait(t.Context(), "addr")
				got <- result{v, err}
			}()
		}
		go func() {
			v, err := waiter.Wait(t.Context(), "addr")
			got <- result{v, err}
		}()
		synctest.Wait()
		select {
		case r := <-got:
			t.Fatalf("Wait returned %q, %v before the key was set", r.v, r.err)
		default:
		}
		if err := setter.Set(t.Context(), "addr", []byte("10.0.0.1:5000")); err != nil {
			t.Fatal(err)
		}
		for range 3 {
			if r := <-got; r.err != nil || string(r.v) != "10.0.0.1:5000" {
				t.Errorf("Wait = %q, %v", r.v, r.err)
			}
		}
	})
}

func TestWaitDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, connect := pipeStore(t)
		c := mustClient(t, connect)
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		start := time.Now()
		_, err := c.Wait(ctx, "never/set")
		if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), `"never/set"`) {
			t.Errorf("Wait past its deadline: err = %v; want DeadlineExceeded naming the key", err)
		}
		if d := time.Since(start); d != 30*time.Second {
			t.Errorf("Wait returned after %v, want 30s", d)
		}
		// The server answered the timeout itself, so the connection is still usable (a
		// NewClient client cannot redial).
		if err := c.Set(t.Context(), "after", []byte("x")); err != nil {
			t.Errorf("Set after a timed-out Wait: %v", err)
		}
		// A deadline already past fails without a round trip.
		if _, err := c.Wait(ctx, "k"); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Wait with an expired context: err = %v", err)
		}
	})
}

// refusedDialer fails with connection refused until open is closed, then hands out pipes
// served by s. It counts its calls.
type refusedDialer struct {
	s     *Server
	open  chan struct{}
	mu    sync.Mutex
	calls int
}

func (d *refusedDialer) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	d.mu.Lock()
	d.calls++
	d.mu.Unlock()
	select {
	case <-d.open:
	default:
		return nil, &net.OpError{Op: "dial", Net: network, Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	}
	a, b := net.Pipe()
	go d.s.ServeConn(b)
	return a, nil
}

func (d *refusedDialer) count() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.calls
}

func TestDialRetriesUntilStoreListens(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, _ := pipeStore(t)
		d := &refusedDialer{s: s, open: make(chan struct{})}
		type result struct {
			c   *Client
			err error
		}
		done := make(chan result, 1)
		go func() {
			c, err := dial(t.Context(), "store:1", testToken, d.dial)
			done <- result{c, err}
		}()
		synctest.Wait() // Dial is asleep in its backoff after a refusal
		if n := d.count(); n < 1 {
			t.Fatalf("dial attempts = %d, want >= 1", n)
		}
		select {
		case r := <-done:
			t.Fatalf("Dial returned %v, %v while the store refused", r.c, r.err)
		default:
		}
		close(d.open)
		r := <-done
		if r.err != nil {
			t.Fatal(r.err)
		}
		defer r.c.Close()
		if err := r.c.Set(t.Context(), "k", []byte("v")); err != nil {
			t.Error(err)
		}
	})
}

func TestWaitCancelledThenRedial(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, connect := pipeStore(t)
		d := &refusedDialer{s: s, open: make(chan struct{})}
		close(d.open)
		c, err := dial(t.Context(), "store:1", testToken, d.dial)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		ctx, cancel := context.WithCancel(t.Context())
		errc := make(chan error, 1)
		go func() {
			_, err := c.Wait(ctx, "k")
			errc <- err
		}()
		synctest.Wait()
		cancel()
		if err := <-errc; !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), `"k"`) {
			t.Errorf("cancelled Wait: err = %v; want Canceled naming the key", err)
		}
		// The next call redials lazily and sees values set meanwhile.
		other := mustClient(t, connect)
		other.Set(t.Context(), "k", []byte("v"))
		if v, err := c.Wait(t.Context(), "k"); err != nil || string(v) != "v" {
			t.Errorf("Wait after redial = %q, %v", v, err)
		}
		if n := d.count(); n != 2 {
			t.Errorf("dials = %d, want 2 (first connection, one redial)", n)
		}
	})
}

func TestDialRefusedUntilDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, _ := pipeStore(t)
		d := &refusedDialer{s: s, open: make(chan struct{})}
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		_, err := dial(ctx, "store:1", testToken, d.dial)
		if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "connection refused") {
			t.Errorf("Dial = %v; want DeadlineExceeded mentioning the refusal", err)
		}
		// Backoff doubles from 10ms and is capped at 1s: 10+20+…+640ms, then 1s steps.
		if n := d.count(); n < 8 || n > 12 {
			t.Errorf("dial attempts in 5s = %d, want about 10", n)
		}
	})
}

// TestDialRealListener checks Dial against the kernel: the port refuses until the store
// starts listening on it, which the test does after seeing the first refusal.
func TestDialRealListener(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()

	refused := make(chan struct{})
	var once sync.Once
	var nd net.Dialer
	dialer := func(ctx context.Context, network, a string) (net.Conn, error) {
		c, err := nd.DialContext(ctx, network, a)
		if errors.Is(err, syscall.ECONNREFUSED) {
			once.Do(func() { close(refused) })
		}
		return c, err
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	type result struct {
		c   *Client
		err error
	}
	done := make(chan result, 1)
	go func() {
		c, err := dial(ctx, addr, testToken, dialer)
		done <- result{c, err}
	}()
	<-refused
	ln, err = net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("port %s was taken meanwhile: %v", addr, err)
	}
	s := NewServer(testToken, nil)
	go s.Serve(ln)
	defer s.Close()
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	defer r.c.Close()
	if n, err := r.c.Add(ctx, "n", 2); err != nil || n != 2 {
		t.Errorf("Add = %d, %v", n, err)
	}
}

func TestBadToken(t *testing.T) {
	other := strings.Repeat("f", len(testToken))
	t.Run("pipe", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			_, connect := pipeStore(t)
			if _, err := connect(other); !errors.Is(err, ErrBadToken) || !errors.Is(err, ErrTokenMismatch) {
				t.Errorf("NewClient with another job's token: err = %v, want ErrBadToken", err)
			}
			if _, err := connect(testToken + "0"); !errors.Is(err, ErrBadToken) {
				t.Errorf("NewClient with a longer token: err = %v, want ErrBadToken", err)
			}
			c := mustClient(t, connect)
			if err := c.Set(t.Context(), "k", []byte("v")); err != nil {
				t.Errorf("the server stopped serving after a bad token: %v", err)
			}
		})
	})
	t.Run("tcp", func(t *testing.T) {
		_, addr := tcpStore(t)
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		defer cancel()
		_, err := Dial(ctx, addr, other)
		if want := "rendezvous " + addr + ": the store belongs to another job (token mismatch)"; err == nil || err.Error() != want {
			t.Errorf("Dial with another job's token: err = %v, want %q", err, want)
		}
		if !errors.Is(err, ErrBadToken) {
			t.Errorf("Dial with another job's token: err = %v does not match ErrBadToken", err)
		}
		if ctx.Err() != nil {
			t.Errorf("Dial retried a bad token until its deadline")
		}
		c, err := Dial(ctx, addr, testToken)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Add(ctx, "n", 1); err != nil {
			t.Error(err)
		}
	})
}

// rawConn is a connection that has proved token (if not empty) and then speaks the wire
// format by hand.
func rawConn(t *testing.T, s *Server, token string) (net.Conn, *bufio.Reader) {
	t.Helper()
	a, b := net.Pipe()
	go s.ServeConn(b)
	t.Cleanup(func() { a.Close() })
	if token != "" {
		if err := HandshakeDial(a, token, storeLabel); err != nil {
			t.Fatalf("handshake: %v", err)
		}
	}
	return a, bufio.NewReader(a)
}

func TestOversizedFrameRejected(t *testing.T) {
	header := func(o op, keyLen, valLen uint32) []byte {
		var h [reqHeaderLen]byte
		h[0] = byte(o)
		binary.BigEndian.PutUint32(h[9:], keyLen)
		binary.BigEndian.PutUint32(h[13:], valLen)
		return h[:]
	}
	cases := []struct {
		name  string
		frame []byte
		want  string
	}{
		{"key", header(opSet, MaxKeyLen+1, 0), "frame too large: key of 4097 bytes"},
		{"value", header(opSet, 1, MaxValueLen+1), "frame too large: value of 67108865 bytes"},
		{"value 4GiB", header(opSet, 1, 1<<32-1), "frame too large: value of 4294967295 bytes"},
		{"unknown op", header(op(99), 0, 0), "unknown op(99)"},
		{"op 0", header(op(0), 0, 0), "unknown op(0)"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				s, connect := pipeStore(t)
				conn, br := rawConn(t, s, testToken)
				// Only the header is sent: the server must answer without reading a body.
				if _, err := conn.Write(tc.frame); err != nil {
					t.Fatal(err)
				}
				p, err := readResponse(br)
				if err != nil || p.status != statusError || !strings.Contains(string(p.value), tc.want) {
					t.Errorf("response = {%d %q}, %v; want an error containing %q", p.status, p.value, err, tc.want)
				}
				if _, err := br.ReadByte(); err == nil {
					t.Errorf("connection still open after a refused frame")
				}
				c := mustClient(t, connect)
				if _, err := c.Add(t.Context(), "n", 1); err != nil {
					t.Errorf("server stopped serving others: %v", err)
				}
			})
		})
	}
}

func TestClientRefusesOversized(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, connect := pipeStore(t)
		c := mustClient(t, connect)
		long := strings.Repeat("k", MaxKeyLen+1)
		if err := c.Set(t.Context(), long, nil); err == nil || !strings.Contains(err.Error(), "over the limit") {
			t.Errorf("Set with a long key: err = %v", err)
		}
		if _, err := c.Wait(t.Context(), long); err == nil {
			t.Errorf("Wait with a long key succeeded")
		}
		if err := c.Set(t.Context(), strings.Repeat("k", MaxKeyLen), []byte("ok")); err != nil {
			t.Errorf("Set with a key of exactly MaxKeyLen: %v", err)
		}
	})
}

func TestCloseWakesWaiters(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, connect := pipeStore(t)
		errc := make(chan error, 3)
		for i := range 3 {
			c := mustClient(t, connect)
			go func() {
				_, err := c.Wait(t.Context(), fmt.Sprint("key", i))
				errc <- err
			}()
		}
		synctest.Wait()
		if n := s.numWaitKeys(); n != 3 {
			t.Fatalf("waiting keys = %d, want 3", n)
		}
		s.Close()
		for range 3 {
			if err := <-errc; err == nil {
				t.Errorf("Wait returned nil after the server closed")
			}
		}
		if err := s.Close(); err != nil {
			t.Errorf("second Close = %v", err)
		}
		a, b := net.Pipe()
		defer a.Close()
		s.ServeConn(b) // returns at once on a closed server
	})
}

func (s *Server) numWaitKeys() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.waiters)
}

func TestServeReturnsNilAfterClose(t *testing.T) {
	s, addr := tcpStore(t) // its cleanup checks that Serve returned nil
	c, err := Dial(t.Context(), addr, testToken)
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := c.Wait(t.Context(), "never")
		errc <- err
	}()
	s.Close()
	if err := <-errc; err == nil {
		t.Errorf("Wait returned nil after the server closed")
	}
	c.Close()
	if err := c.Set(t.Context(), "k", nil); !errors.Is(err, ErrClosed) {
		t.Errorf("Set after Close: err = %v, want ErrClosed", err)
	}
}

func TestConcurrentAdd(t *testing.T) {
	_, addr := tcpStore(t)
	const clients, goroutines, adds = 4, 8, 50
	ctx := t.Context()
	var wg sync.WaitGroup
	seen := make([][]int64, clients*goroutines)
	for i := range clients {
		c, err := Dial(ctx, addr, testToken)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		for j := range goroutines { // goroutines share a client
			wg.Go(func() {
				for range adds {
					n, err := c.Add(ctx, "counter", 1)
					if err != nil {
						t.Error(err)
						return
					}
					seen[i*goroutines+j] = append(seen[i*goroutines+j], n)
				}
			})
		}
	}
	wg.Wait()
	c, err := Dial(ctx, addr, testToken)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	v, _, err := c.Get(ctx, "counter")
	if want := fmt.Sprint(clients * goroutines * adds); err != nil || string(v) != want {
		t.Errorf("counter = %q, %v; want %s", v, err, want)
	}
	// Every Add saw a distinct value: no two increments were merged.
	all := map[int64]bool{}
	for _, s := range seen {
		for _, n := range s {
			if all[n] {
				t.Fatalf("value %d returned twice", n)
			}
			all[n] = true
		}
	}
}
