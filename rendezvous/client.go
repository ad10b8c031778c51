package rendezvous

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
)

// ErrClosed is returned by the methods of a Client after Close.
var ErrClosed = errors.New("rendezvous: client closed")

const (
	// waitSlack is how long a client whose deadline has passed still listens for the
	// server's own timeout answer; getting it keeps the connection usable.
	waitSlack = time.Second

	dialBackoffMin = 10 * time.Millisecond
	dialBackoffMax = time.Second
)

type dialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// Client talks to a Server over one connection. It is safe for concurrent use; requests are
// serialised, so a blocked Wait delays the client's other calls (use one Client per
// goroutine that waits, if that matters). A connection broken by a cancelled call is
// redialled on the next call when the Client was made by Dial.
type Client struct {
	token  string
	addr   string                                      // the store's, for errors
	redial func(ctx context.Context) (net.Conn, error) // nil: cannot redial (NewClient)
	sem    chan struct{}                               // one slot: the request in flight

	mu     sync.Mutex
	conn   *clientConn // nil when broken
	closed bool
}

type clientConn struct {
	c  net.Conn
	br *bufio.Reader
}

// Dial connects to the store at addr (host:port), and the store and the client prove the
// job token to each other (the token itself never travels). Connection refused, and a
// store at its limit of connections, are retried with backoff until ctx ends, because
// workers may start before the store listens. A store that does not prove the token (it
// serves another job) fails at once with an error matching ErrBadToken; a token shorter
// than MinTokenLen fails before anything is sent.
func Dial(ctx context.Context, addr, token string) (*Client, error) {
	var d net.Dialer
	return dial(ctx, addr, token, d.DialContext)
}

func dial(ctx context.Context, addr, token string, dialer dialFunc) (*Client, error) {
	if err := CheckToken(token); err != nil {
		return nil, fmt.Errorf("rendezvous %s: %w", addr, err)
	}
	c := newClient(token, addr)
	c.redial = func(ctx context.Context) (net.Conn, error) { return dialRetry(ctx, addr, dialer) }
	c.sem <- struct{}{}
	defer func() { <-c.sem }()
	if _, err := c.current(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

// NewClient runs the token proof over an already connected conn. Such a client cannot
// redial: once its connection breaks (a cancelled call), every later call fails.
func NewClient(ctx context.Context, conn net.Conn, token string) (*Client, error) {
	c := newClient(token, conn.RemoteAddr().String())
	if err := CheckToken(token); err != nil {
		conn.Close()
		return nil, fmt.Errorf("rendezvous %s: %w", c.addr, err)
	}
	cc, err := c.handshake(ctx, conn)
	if err != nil {
		return nil, c.handshakeErr(err)
	}
	c.conn = cc
	return c, nil
}

func newClient(token, addr string) *Client {
	return &Client{token: token, addr: addr, sem: make(chan struct{}, 1)}
}

func dialRetry(ctx context.Context, addr string, dialer dialFunc) (net.Conn, error) {
	backoff := dialBackoffMin
	for {
		conn, err := dialer(ctx, "tcp", addr)
		if err == nil {
			return conn, nil
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("rendezvous: dial %s: %w (last attempt: %v)", addr, ctx.Err(), err)
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("rendezvous: dial %s: %w", addr, err)
		}
		if !sleep(ctx, backoff) {
			return nil, fmt.Errorf("rendezvous: dial %s: %w (last attempt: %v)", addr, ctx.Err(), err)
		}
		backoff = min(2*backoff, dialBackoffMax)
	}
}

// sleep waits d, or until ctx ends (then it reports false).
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// handshake proves the token over conn and checks the store's proof, within the server's
// handshake limit and ctx; it closes conn on failure.
func (c *Client) handshake(ctx context.Context, conn net.Conn) (*clientConn, error) {
	dl := time.Now().Add(defaultLimits.handshake)
	d, ctxFirst := ctx.Deadline()
	if ctxFirst = ctxFirst && d.Before(dl); ctxFirst {
		dl = d
	}
	conn.SetDeadline(dl)
	fired := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(fired)
		conn.SetDeadline(time.Unix(1, 0))
	})
	err := HandshakeDial(conn, c.token, storeLabel)
	if !stop() {
		<-fired
	}
	if err == nil {
		err = ctx.Err()
	}
	if err == nil {
		err = conn.SetDeadline(time.Time{})
	}
	if ctxFirst && errors.Is(err, os.ErrDeadlineExceeded) {
		err = context.DeadlineExceeded // the socket's deadline fired a moment before ctx's timer
	}
	if err != nil {
		conn.Close()
		if ctx.Err() != nil && !errors.Is(err, ErrTokenMismatch) {
			return nil, ctx.Err()
		}
		return nil, err
	}
	return &clientConn{c: conn, br: bufio.NewReader(conn)}, nil
}

// handshakeErr is the one line that says why a handshake failed.
func (c *Client) handshakeErr(err error) error {
	switch {
	case errors.Is(err, ErrTokenMismatch):
		return fmt.Errorf("rendezvous %s: %w", c.addr, ErrBadToken)
	case errors.Is(err, errBusy):
		return fmt.Errorf("rendezvous %s: the store is busy: it serves its limit of connections", c.addr)
	case errors.Is(err, errEarlyClose):
		return fmt.Errorf("rendezvous %s: the store closed the connection before answering (too many connections proving their token?)", c.addr)
	case errors.Is(err, os.ErrDeadlineExceeded):
		return fmt.Errorf("rendezvous %s: no answer to the token proof within %v (is it a moerun store?)", c.addr, defaultLimits.handshake)
	}
	return fmt.Errorf("rendezvous %s: handshake: %w", c.addr, err)
}

// current returns the live connection, dialling a new one if the last broke. A store that
// is busy, or that closes new connections at once (too many still proving their token), is
// retried with backoff until ctx ends. The caller holds c.sem.
func (c *Client) current(ctx context.Context) (*clientConn, error) {
	c.mu.Lock()
	closed, cc := c.closed, c.conn
	c.mu.Unlock()
	switch {
	case closed:
		return nil, ErrClosed
	case cc != nil:
		return cc, nil
	case c.redial == nil:
		return nil, errors.New("rendezvous: connection lost (a client made by NewClient cannot redial)")
	}
	for backoff := dialBackoffMin; ; backoff = min(2*backoff, dialBackoffMax) {
		conn, err := c.redial(ctx)
		if err != nil {
			return nil, err
		}
		cc, err = c.handshake(ctx, conn)
		if err == nil {
			break
		}
		if !errors.Is(err, errBusy) && !errors.Is(err, errEarlyClose) {
			return nil, c.handshakeErr(err)
		}
		if !sleep(ctx, backoff) {
			return nil, fmt.Errorf("%w (gave up: %w)", c.handshakeErr(err), ctx.Err())
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		cc.c.Close()
		return nil, ErrClosed
	}
	c.conn = cc
	return cc, nil
}

// do sends one request and reads its response, one request at a time. A transport error
// or an interrupted call drops the connection.
func (c *Client) do(ctx context.Context, q request) (response, error) {
	if err := ctx.Err(); err != nil {
		return response{}, err // before touching the connection, which it would break
	}
	select {
	case c.sem <- struct{}{}:
	case <-ctx.Done():
		return response{}, ctx.Err()
	}
	defer func() { <-c.sem }()
	cc, err := c.current(ctx)
	if err != nil {
		return response{}, err
	}
	p, err := roundTrip(ctx, cc, q)
	if err != nil {
		c.mu.Lock()
		if c.conn == cc {
			c.conn = nil
		}
		closed := c.closed
		c.mu.Unlock()
		cc.c.Close()
		if closed {
			return response{}, ErrClosed
		}
		return response{}, err
	}
	return p, nil
}

// roundTrip writes q and reads the answer. When ctx ends first the connection's deadline is
// pulled in: at once if ctx was cancelled, and waitSlack later if a timed wait reached its
// deadline, because the server then answers statusTimeout itself at that moment.
func roundTrip(ctx context.Context, cc *clientConn, q request) (response, error) {
	fired := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(fired)
		var slack time.Duration
		if q.op == opWait && q.arg > 0 && errors.Is(ctx.Err(), context.DeadlineExceeded) {
			slack = waitSlack
		}
		cc.c.SetDeadline(time.Now().Add(slack))
	})
	err := writeRequest(cc.c, q)
	var p response
	if err == nil {
		p, err = readResponse(cc.br)
	}
	if !stop() {
		<-fired
		if err == nil {
			err = cc.c.SetDeadline(time.Time{})
		}
	}
	if err != nil && ctx.Err() != nil {
		return response{}, ctx.Err()
	}
	return p, err
}

// isReset reports a connection that the peer closed with our bytes unread, as it shows on
// Linux: reset on reading, a broken pipe on writing.
func isReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

func statusErr(p response) error {
	if p.status == statusError {
		return fmt.Errorf("store: %s", p.value)
	}
	return fmt.Errorf("unexpected response status %d", p.status)
}

// Set stores value under key, waking every Wait for key.
func (c *Client) Set(ctx context.Context, key string, value []byte) error {
	if err := checkKey(key); err != nil {
		return fmt.Errorf("rendezvous: set %q: %w", key, err)
	}
	if err := checkValue(value); err != nil {
		return fmt.Errorf("rendezvous: set %q: %w", key, err)
	}
	p, err := c.do(ctx, request{op: opSet, key: key, value: value})
	if err == nil && p.status != statusOK {
		err = statusErr(p)
	}
	if err != nil {
		return fmt.Errorf("rendezvous: set %q: %w", key, err)
	}
	return nil
}

// Get returns the value of key, or ok == false if it is not set. It does not block.
func (c *Client) Get(ctx context.Context, key string) (value []byte, ok bool, err error) {
	if err := checkKey(key); err != nil {
		return nil, false, fmt.Errorf("rendezvous: get %q: %w", key, err)
	}
	p, err := c.do(ctx, request{op: opGet, key: key})
	if err == nil {
		switch p.status {
		case statusOK:
			return p.value, true, nil
		case statusNotFound:
			return nil, false, nil
		}
		err = statusErr(p)
	}
	return nil, false, fmt.Errorf("rendezvous: get %q: %w", key, err)
}

// Wait returns the value of key, blocking until some client sets it or ctx ends. The time
// left before ctx's deadline travels to the server, which answers at that moment; the error
// then wraps context.DeadlineExceeded and names the key.
func (c *Client) Wait(ctx context.Context, key string) ([]byte, error) {
	if err := checkKey(key); err != nil {
		return nil, fmt.Errorf("rendezvous: wait for key %q: %w", key, err)
	}
	q := request{op: opWait, key: key}
	if d, ok := ctx.Deadline(); ok {
		left := time.Until(d)
		if left <= 0 {
			return nil, fmt.Errorf("rendezvous: wait for key %q: %w", key, context.DeadlineExceeded)
		}
		q.arg = int64(left)
	}
	p, err := c.do(ctx, q)
	if err == nil {
		switch p.status {
		case statusOK:
			return p.value, nil
		case statusTimeout:
			err = context.DeadlineExceeded
		default:
			err = statusErr(p)
		}
	}
	return nil, fmt.Errorf("rendezvous: wait for key %q: %w", key, err)
}

// Add adds delta to the int64 counter at key (absent counts as 0) and returns the new value.
// Counters are stored as decimal ASCII; Add on a value that is not one fails.
func (c *Client) Add(ctx context.Context, key string, delta int64) (int64, error) {
	if err := checkKey(key); err != nil {
		return 0, fmt.Errorf("rendezvous: add to %q: %w", key, err)
	}
	p, err := c.do(ctx, request{op: opAdd, key: key, arg: delta})
	if err == nil && p.status != statusOK {
		err = statusErr(p)
	}
	if err != nil {
		return 0, fmt.Errorf("rendezvous: add to %q: %w", key, err)
	}
	return p.arg, nil
}

// Close closes the connection; calls in flight and later calls fail with ErrClosed.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	if c.conn != nil {
		err := c.conn.c.Close()
		c.conn = nil
		return err
	}
	return nil
}
