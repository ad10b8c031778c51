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
	"github.com/moerun/moerun/rendezvous"
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

// Every ring connection opens with the job token's mutual proof (rendezvous.HandshakeDial
// and HandshakeAccept), under a label that names the group and the link, so that a stray
// or stale dialer (another job's process on a reused port, another group of this job, a
// port scanner) is refused before any data flows, and a dialer never feeds data to a
// listener that is not its successor. The token itself never travels.
const (
	// ringHandshake bounds one connection's proof, within the set-up's own deadline.
	ringHandshake = 10 * time.Second
	// maxRingProofs is how many connections a rank's listener checks at once while it
	// waits for its predecessor. A few strays that connect and stall delay nobody; more
	// wait in the listen backlog, each wave holding the predecessor up by at most
	// ringHandshake, and cost no more goroutines.
	maxRingProofs = 8
)

// Open joins the world ring with the default Options, except that MOERUN_TCP_CMA=0 in the
// environment turns the single-host fast path off (as NCCL_SHM_DISABLE does for NCCL), and
// that the job token comes from MOERUN_TOKEN when cfg.Token is empty. Every rank of
// cfg.Size must call it with the same Namespace and token.
func Open(ctx context.Context, cfg comm.Config) (comm.Communicator, error) {
	if cfg.Token == "" {
		cfg.Token = os.Getenv(rendezvous.EnvToken)
	}
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
	actx, stopAccepting := context.WithCancel(ctx)
	defer stopAccepting()
	go func() {
		conn, err := c.acceptPrev(actx, ln)
		acc <- accepted{conn, err}
	}()
	next, dialErr := c.dialNext(ctx)
	if dialErr != nil {
		// A rank that cannot join its successor does not wait for its predecessor.
		stopAccepting()
	}
	a := <-acc
	if dialErr != nil || a.err != nil {
		if next != nil {
			next.Close()
		}
		if a.conn != nil {
			a.conn.Close()
		}
		if dialErr != nil {
			return nil, dialErr
		}
		return nil, a.err
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
	if err := c.prove(ctx, conn, c.ringLabel(c.rank, peer), true); err != nil {
		conn.Close()
		if errors.Is(err, rendezvous.ErrTokenMismatch) {
			return nil, fmt.Errorf("connect to rank %d at %s: the peer does not hold this job's token (%w)", peer, addr, err)
		}
		return nil, fmt.Errorf("connect to rank %d at %s: token proof: %w", peer, addr, err)
	}
	return conn, nil
}

// acceptPrev accepts connections until one proves to be the predecessor: it holds the
// job's token and means this link. Proofs run concurrently, at most maxRingProofs at once,
// so a stray connection that stalls holds up nobody; strays are logged and closed.
func (c *Comm) acceptPrev(ctx context.Context, ln net.Listener) (net.Conn, error) {
	peer := (c.rank - 1 + c.size) % c.size
	label := c.ringLabel(peer, c.rank)
	ctx, cancel := context.WithCancel(ctx)
	var proofs sync.WaitGroup
	defer func() {
		cancel() // aborts the proofs still running
		proofs.Wait()
	}()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	won := make(chan net.Conn, 1)
	fail := func(err error) (net.Conn, error) {
		select {
		case conn := <-won:
			return conn, nil
		default:
		}
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return nil, fmt.Errorf("wait for rank %d to connect: %w", peer, err)
	}
	slots := make(chan struct{}, maxRingProofs)
	for {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return fail(ctx.Err())
		}
		conn, err := ln.Accept()
		if err != nil {
			return fail(err)
		}
		proofs.Go(func() {
			defer func() { <-slots }()
			if err := c.prove(ctx, conn, label, false); err != nil {
				if ctx.Err() == nil {
					c.cfg.Logger.Warn("tcp: refused a connection that is not our ring predecessor", "from", conn.RemoteAddr(), "rank", c.rank, "err", err)
				}
				conn.Close()
				return
			}
			select {
			case won <- conn:
				cancel() // closes ln: the accept loop returns the winner
			default:
				conn.Close()
			}
		})
	}
}

// prove runs this side of the token proof on a new ring connection, within ringHandshake
// and ctx.
func (c *Comm) prove(ctx context.Context, conn net.Conn, label string, dialer bool) error {
	dl := time.Now().Add(ringHandshake)
	if d, ok := ctx.Deadline(); ok && d.Before(dl) {
		dl = d
	}
	conn.SetDeadline(dl)
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	var err error
	if dialer {
		err = rendezvous.HandshakeDial(conn, c.cfg.Token, label)
	} else {
		err = rendezvous.HandshakeAccept(conn, c.cfg.Token, label)
	}
	if !stop() {
		// ctx ended during the proof, and its deadline may land at any moment: the
		// connection is of no use.
		if err == nil || !errors.Is(err, rendezvous.ErrTokenMismatch) {
			err = ctx.Err()
		}
		return err
	}
	if err != nil {
		return err
	}
	return conn.SetDeadline(time.Time{})
}

// ringLabel names the link from rank `from` to rank `to` of this group: a proof for one
// link (of another group, or another size) opens no other.
func (c *Comm) ringLabel(from, to int) string {
	return "moerun-tcp-ring/2\x00" + c.cfg.Namespace + "\x00" + strconv.Itoa(from) + ">" + strconv.Itoa(to) + "/" + strconv.Itoa(c.size)
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
