// Package tcp is the CPU backend of comm: ranks form a ring of TCP connections (each rank
// dials its successor and accepts its predecessor) and run bandwidth-optimal ring
// algorithms over it. It works between processes on one host (loopback) or on several
// (each rank advertises comm.Config.Host), and registers itself as the "tcp" backend.
// Host buffers only: device memory belongs to the NCCL backend.
package tcp

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/moerun/moerun/comm"
)

func init() { comm.Register("tcp", Open) }

// Comm is one rank's membership in a ring.
type Comm struct {
	rank, size int
	cfg        comm.Config // Store, Namespace, Host, Timeout, Logger of this group
	opt        Options
	next       net.Conn // we write to rank+1
	prev       net.Conn // we read from rank-1
	splits     int      // number of Split calls so far; names the sub-groups' namespaces

	scratch []byte // reduce-scatter's accumulation blocks, reused across calls
	seg     []byte // receive staging for reductions
	acc     []byte // float32 accumulator of the single-host fast path

	// pids of every rank when the single-host fast path is on (local.go), else nil;
	// probe is the word the peers read to prove that they can.
	pids  []int
	probe *uint64

	mu     sync.Mutex // guards broken and closed
	broken error      // the first transport error: the ring is out of step after it
	closed bool
}

var _ comm.Communicator = (*Comm)(nil)

// hello is the first message on a ring connection, so that a stray or stale dialer (a
// port reused by another job, another group of this job) is refused.
const helloMagic = "moerun-tcp-ring/1"

// Open joins the world ring with the default Options, except that MOERUN_TCP_CMA=0 in the
// environment turns the single-host fast path off (as NCCL_SHM_DISABLE does for NCCL).
// Every rank of cfg.Size must call it with the same Namespace.
func Open(ctx context.Context, cfg comm.Config) (comm.Communicator, error) {
	return Options{NoCMA: os.Getenv("MOERUN_TCP_CMA") == "0"}.Open(ctx, cfg)
}

// Options tune the backend.
type Options struct {
	// NoCMA keeps every transfer on the sockets, even between ranks of one host.
	NoCMA bool
	// CMAMinBytes is the smallest message that takes the single-host fast path
	// (0 means DefaultCMAMinBytes).
	CMAMinBytes int
}

// Open joins the world ring with these options.
func (o Options) Open(ctx context.Context, cfg comm.Config) (comm.Communicator, error) {
	c, err := open(ctx, cfg, o)
	if err != nil {
		return nil, err
	}
	return c, nil
}

func open(ctx context.Context, cfg comm.Config, opt Options) (*Comm, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Host == "" {
		cfg.Host = "127.0.0.1"
	}
	c := &Comm{rank: cfg.Rank, size: cfg.Size, cfg: cfg, opt: opt}
	if cfg.Size == 1 {
		return c, nil
	}
	ctx, cancel := c.bound(ctx)
	defer cancel()

	ln, err := net.Listen("tcp", net.JoinHostPort(cfg.Host, "0"))
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", cfg.Host, err)
	}
	defer ln.Close()
	if err := cfg.Store.Set(ctx, c.key("addr", cfg.Rank), []byte(ln.Addr().String())); err != nil {
		return nil, fmt.Errorf("publish address: %w", err)
	}

	// Accept the predecessor while dialing the successor: with two ranks each is both.
	type accepted struct {
		conn net.Conn
		err  error
	}
	acc := make(chan accepted, 1)
	go func() {
		conn, err := c.acceptPrev(ctx, ln)
		acc <- accepted{conn, err}
	}()
	next, dialErr := c.dialNext(ctx)
	a := <-acc
	if dialErr != nil || a.err != nil {
		if next != nil {
			next.Close()
		}
		if a.conn != nil {
			a.conn.Close()
		}
		return nil, errors.Join(dialErr, a.err)
	}
	c.next, c.prev = next, a.conn
	if err := c.setupLocal(ctx); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func (c *Comm) key(what string, rank int) string {
	return c.cfg.Namespace + "/tcp/" + what + "/" + strconv.Itoa(rank)
}

// bound applies the configured per-wait timeout when ctx has no earlier deadline.
func (c *Comm) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	if c.cfg.Timeout <= 0 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, c.cfg.Timeout)
}

func (c *Comm) dialNext(ctx context.Context) (net.Conn, error) {
	peer := (c.rank + 1) % c.size
	addr, err := c.cfg.Store.Wait(ctx, c.key("addr", peer))
	if err != nil {
		return nil, fmt.Errorf("address of rank %d: %w", peer, err)
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", string(addr))
	if err != nil {
		return nil, fmt.Errorf("connect to rank %d at %s: %w", peer, addr, err)
	}
	tune(conn)
	hello := c.hello(c.rank)
	if dl, ok := ctx.Deadline(); ok {
		conn.SetWriteDeadline(dl)
	}
	if _, err := conn.Write(hello); err != nil {
		conn.Close()
		return nil, fmt.Errorf("greet rank %d: %w", peer, err)
	}
	conn.SetWriteDeadline(time.Time{})
	return conn, nil
}

func (c *Comm) acceptPrev(ctx context.Context, ln net.Listener) (net.Conn, error) {
	peer := (c.rank - 1 + c.size) % c.size
	want := c.hello(peer)
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("wait for rank %d to connect: %w", peer, ctx.Err())
			}
			return nil, fmt.Errorf("wait for rank %d to connect: %w", peer, err)
		}
		got := make([]byte, len(want))
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err = io.ReadFull(conn, got)
		conn.SetReadDeadline(time.Time{})
		if err != nil || string(got) != string(want) {
			c.cfg.Logger.Warn("tcp: refused a connection that is not our ring predecessor", "from", conn.RemoteAddr(), "rank", c.rank)
			conn.Close()
			continue
		}
		tune(conn)
		return conn, nil
	}
}

// hello names the namespace and the sender's rank, length-prefixed.
func (c *Comm) hello(from int) []byte {
	body := helloMagic + "\x00" + c.cfg.Namespace + "\x00" + strconv.Itoa(from) + "/" + strconv.Itoa(c.size)
	b := binary.BigEndian.AppendUint32(nil, uint32(len(body)))
	return append(b, body...)
}

func tune(conn net.Conn) {
	if tc, ok := conn.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
		// Large kernel buffers let a whole pipeline segment sit in flight.
		tc.SetReadBuffer(4 << 20)
		tc.SetWriteBuffer(4 << 20)
	}
}

func (c *Comm) Rank() int { return c.rank }
func (c *Comm) Size() int { return c.size }

// Split forms sub-rings: an all-gather of (color, key) over this ring tells every rank its
// group, then each group connects under a namespace of its own.
func (c *Comm) Split(ctx context.Context, color, key int) (comm.Communicator, error) {
	seq := c.splits
	c.splits++
	mine := make([]byte, 16)
	binary.BigEndian.PutUint64(mine[0:], uint64(int64(color)))
	binary.BigEndian.PutUint64(mine[8:], uint64(int64(key)))
	all := make([]byte, 16*c.size)
	if err := c.allGatherBytes(ctx, mine, all); err != nil {
		return nil, err
	}
	if color < 0 {
		return nil, nil
	}
	type member struct{ key, rank int }
	var members []member
	for r := 0; r < c.size; r++ {
		col := int(int64(binary.BigEndian.Uint64(all[16*r:])))
		if col == color {
			members = append(members, member{int(int64(binary.BigEndian.Uint64(all[16*r+8:]))), r})
		}
	}
	newRank := 0
	for _, m := range members {
		if m.key < key || (m.key == key && m.rank < c.rank) {
			newRank++
		}
	}
	cfg := c.cfg
	cfg.Rank, cfg.Size = newRank, len(members)
	cfg.Namespace = fmt.Sprintf("%s/split%d/color%d", c.cfg.Namespace, seq, color)
	sub, err := open(ctx, cfg, c.opt)
	if err != nil {
		return nil, err
	}
	return sub, nil
}

// Close closes the ring connections. It is safe to call twice.
func (c *Comm) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	var errs []error
	for _, conn := range []net.Conn{c.next, c.prev} {
		if conn != nil {
			if err := conn.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// begin checks that the ring is usable and arms the deadline of this collective on both
// connections: the earlier of ctx's deadline and the configured timeout, and an immediate
// one if ctx is cancelled. The returned func disarms it.
func (c *Comm) begin(ctx context.Context) (func(), error) {
	c.mu.Lock()
	err := c.broken
	if c.closed {
		err = errors.New("communicator is closed")
	}
	c.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if c.size == 1 {
		return func() {}, nil
	}
	var dl time.Time
	if c.cfg.Timeout > 0 {
		dl = time.Now().Add(c.cfg.Timeout)
	}
	if d, ok := ctx.Deadline(); ok && (dl.IsZero() || d.Before(dl)) {
		dl = d
	}
	c.next.SetDeadline(dl)
	c.prev.SetDeadline(dl)
	stop := context.AfterFunc(ctx, func() {
		past := time.Unix(1, 0)
		c.next.SetDeadline(past)
		c.prev.SetDeadline(past)
	})
	return func() { stop() }, nil
}

// end records a transport error: after one, ranks no longer agree on what comes next on
// the wire, so every later collective fails at once with the same cause.
func (c *Comm) end(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	switch {
	case ctx.Err() != nil:
		err = fmt.Errorf("%w (%w)", ctx.Err(), err)
	case errors.Is(err, os.ErrDeadlineExceeded):
		// The socket's deadline can fire a moment before ctx's own timer does.
		if d, ok := ctx.Deadline(); ok && time.Until(d) < 10*time.Millisecond {
			err = fmt.Errorf("%w (%w)", context.DeadlineExceeded, err)
		} else {
			err = fmt.Errorf("no progress from the ring's peers within %v (a rank stopped or is stuck): %w", c.cfg.Timeout, err)
		}
	case errors.Is(err, comm.ErrPeerLost):
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ESRCH):
		err = fmt.Errorf("%w: %w", comm.ErrPeerLost, err)
	}
	c.mu.Lock()
	if c.broken == nil {
		c.broken = fmt.Errorf("communicator broken by an earlier error: %w", err)
	}
	c.mu.Unlock()
	return err
}

var errDevice = errors.New("the tcp backend moves host memory only; device buffers need the nccl backend")
