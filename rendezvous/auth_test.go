package rendezvous

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// handshakePair runs HandshakeDial and HandshakeAccept against each other over a pipe.
func handshakePair(dialToken, dialLabel, acceptToken, acceptLabel string) (dialErr, acceptErr error) {
	a, b := net.Pipe()
	done := make(chan error, 1)
	go func() {
		err := HandshakeAccept(b, acceptToken, acceptLabel)
		b.Close()
		done <- err
	}()
	dialErr = HandshakeDial(a, dialToken, dialLabel)
	a.Close() // the acceptor may still be writing its verdict
	return dialErr, <-done
}

func TestHandshake(t *testing.T) {
	other := strings.Repeat("f", len(testToken))
	synctest.Test(t, func(t *testing.T) {
		if d, a := handshakePair(testToken, "l", testToken, "l"); d != nil || a != nil {
			t.Errorf("same token and label: dialer %v, acceptor %v; want both nil", d, a)
		}
		// The acceptor proves first, so the dialer finds the mismatch; the acceptor then
		// gets a proof that fails, and logs a wrong token rather than a dropped connection.
		if d, a := handshakePair(testToken, "l", other, "l"); !errors.Is(d, ErrTokenMismatch) || !errors.Is(a, ErrTokenMismatch) {
			t.Errorf("other token: dialer %v, acceptor %v; want ErrTokenMismatch on both", d, a)
		}
		d, a := handshakePair(testToken, "ring a", testToken, "ring b")
		if d == nil || a == nil || errors.Is(d, ErrTokenMismatch) || !strings.Contains(d.Error(), "expects another connection") {
			t.Errorf("other label: dialer %v, acceptor %v; want both to fail, the dialer told that it is not expected", d, a)
		}
	})
}

// The acceptor refuses a dialer that sends back the acceptor's own proof (the role byte),
// and one that replays a proof recorded from an earlier exchange (fresh nonces).
func TestHandshakeRefusesReflectionAndReplay(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		type attempt struct {
			nonceD []byte
			proofD func(challenge []byte) []byte
		}
		run := func(at attempt) (verdict byte, challenge []byte, acceptErr error) {
			a, b := net.Pipe()
			defer a.Close()
			done := make(chan error, 1)
			go func() { done <- HandshakeAccept(b, testToken, "l"); b.Close() }()
			hello := append(append([]byte(authMagic), labelSum("l")...), at.nonceD...)
			a.Write(hello)
			ch := make([]byte, challengeLen)
			io.ReadFull(a, ch)
			a.Write(at.proofD(ch))
			v := make([]byte, 1)
			io.ReadFull(a, v)
			return v[0], ch, <-done
		}
		nonceD := bytes.Repeat([]byte{7}, nonceLen)
		reflect := func(ch []byte) []byte { return ch[1+nonceLen:] }
		if v, _, err := run(attempt{nonceD, reflect}); v != byte(codeMismatch) || !errors.Is(err, ErrTokenMismatch) {
			t.Errorf("reflected proof: verdict %d, acceptor %v; want refused", v, err)
		}
		honest := func(ch []byte) []byte { return proof(testToken, "l", roleDialer, nonceD, ch[1:1+nonceLen]) }
		v, ch, err := run(attempt{nonceD, honest})
		if v != byte(codeOK) || err != nil {
			t.Fatalf("honest proof: verdict %d, acceptor %v", v, err)
		}
		recorded := honest(ch)
		replay := func([]byte) []byte { return recorded }
		if v, _, err := run(attempt{nonceD, replay}); v != byte(codeMismatch) || !errors.Is(err, ErrTokenMismatch) {
			t.Errorf("replayed proof: verdict %d, acceptor %v; want refused", v, err)
		}
	})
}

// recordingConn keeps every byte read from a connection.
type recordingConn struct {
	net.Conn
	mu  sync.Mutex
	got bytes.Buffer
}

func (c *recordingConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.mu.Lock()
	c.got.Write(b[:n])
	c.mu.Unlock()
	return n, err
}

func (c *recordingConn) bytes() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return bytes.Clone(c.got.Bytes())
}

// TestTokenNeverSent records all a client sends, to its own store and to a store of another
// job, and finds the token in neither (as text or as the bytes it encodes).
func TestTokenNeverSent(t *testing.T) {
	raw, _ := hex.DecodeString(testToken)
	check := func(t *testing.T, sent []byte) {
		t.Helper()
		if bytes.Contains(sent, []byte(testToken)) || bytes.Contains(sent, raw) {
			t.Errorf("the client sent its token")
		}
		if len(sent) < helloLen {
			t.Errorf("recorded %d bytes, want at least the hello", len(sent))
		}
	}
	t.Run("own store", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			s := NewServer(testToken, nil)
			defer s.Close()
			a, b := net.Pipe()
			rec := &recordingConn{Conn: b}
			go s.ServeConn(rec)
			c, err := NewClient(t.Context(), a, testToken)
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Set(t.Context(), "k", []byte("v")); err != nil {
				t.Fatal(err)
			}
			c.Close()
			synctest.Wait()
			check(t, rec.bytes())
		})
	})
	t.Run("another job's store", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			s := NewServer(strings.Repeat("e", len(testToken)), nil)
			defer s.Close()
			a, b := net.Pipe()
			rec := &recordingConn{Conn: b}
			go s.ServeConn(rec)
			if _, err := NewClient(t.Context(), a, testToken); !errors.Is(err, ErrBadToken) {
				t.Fatalf("NewClient = %v, want ErrBadToken", err)
			}
			synctest.Wait()
			check(t, rec.bytes())
		})
	})
}

func TestShortTokenRefused(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, _ := pipeStore(t)
		d := &refusedDialer{s: s, open: make(chan struct{})}
		close(d.open)
		_, err := dial(t.Context(), "store:1", "abc", d.dial)
		if err == nil || !strings.Contains(err.Error(), "MOERUN_TOKEN") || !strings.Contains(err.Error(), "at least 32") {
			t.Errorf("Dial with a 3-character token: err = %v; want one naming MOERUN_TOKEN and the minimum", err)
		}
		if n := d.count(); n != 0 {
			t.Errorf("Dial connected %d times with a token it refuses", n)
		}
	})
}

// A listener that accepts and never answers (a stalled or foreign service) costs a client
// its context's time, or the handshake limit, and no more.
func TestDialStalledStore(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	held := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			held <- c
		}
	}()
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	_, err = Dial(ctx, ln.Addr().String(), testToken)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Dial of a silent listener: err = %v, want DeadlineExceeded", err)
	}
	(<-held).Close()
}
