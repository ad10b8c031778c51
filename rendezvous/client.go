package rendezvous

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
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

// Dial connects to the store at addr (host:port) and presents token. Connection refused is
// retried with backoff until ctx ends, because workers may start before the store listens.
// A refused token fails at once with an error matching ErrBadToken.
func Dial(ctx context.Context, addr, token string) (*Client, error) {
	var d net.Dialer
	return dial(ctx, addr, token, d.DialContext)
}

func dial(ctx context.Context, addr, token string, dialer dialFunc) (*Client, error) {
	c := newClient(token)
	c.redial = func(ctx context.Context) (net.Conn, error) { return dialRetry(ctx, addr, dialer) }
	c.sem <- struct{}{}
	defer func() { <-c.sem }()
	if _, err := c.current(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

// NewClient presents token over an already connected conn. Such a client cannot redial: once
// its connection breaks (a cancelled call), every later call fails.
func NewClient(ctx context.Context, conn net.Conn, token string) (*Client, error) {
	c := newClient(token)
	cc, err := c.handshake(ctx, conn)
	if err != nil {
		return nil, err
	}
	c.conn = cc
	return c, nil
}

func newClient(token string) *Client {
	return &Client{token: token, sem: make(chan struct{}, 1)}
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
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("rendezvous: dial %s: %w (last attempt: %v)", addr, ctx.Err(), err)
		case <-t.C:
		}
		backoff = min(2*backoff, dialBackoffMax)
	}
}

// handshake sends the token over conn and reads the verdict; it closes conn on failure.
func (c *Client) handshake(ctx context.Context, conn net.Conn) (*clientConn, error) {
	cc := &clientConn{c: conn, br: bufio.NewReader(conn)}
	p, err := roundTrip(ctx, cc, request{op: opHello, arg: protoVersion, value: []byte(c.token)})
	switch {
	case err != nil:
		err = fmt.Errorf("rendezvous: handshake with %s: %w", conn.RemoteAddr(), err)
	case p.status == statusBadToken:
		err = ErrBadToken
	case p.status != statusOK:
		err = fmt.Errorf("rendezvous: handshake with %s: %w", conn.RemoteAddr(), statusErr(p))
	}
	if err != nil {
		conn.Close()
		return nil, err
	}
	return cc, nil
}

// current returns the live connection, dialling a new one if the last broke. The caller
// holds c.sem.
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
	conn, err := c.redial(ctx)
	if err != nil {
		return nil, err
	}
	if cc, err = c.handshake(ctx, conn); err != nil {
		return nil, err
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
