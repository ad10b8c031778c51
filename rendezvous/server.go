package rendezvous

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// Limits. Together they bound what clients, honest or not, can make the server hold:
// about MaxStoreBytes of keys and values (and bodies being read), plus MaxConns+256
// connections of a few tens of KiB each (two goroutines, a read buffer, one waiting key of
// at most MaxKeyLen). A client that breaks them gets:
//   - a key over MaxKeyLen or a value over MaxValueLen: statusError "frame too large: …",
//     then the connection is closed;
//   - a Set or Add that would pass MaxStoreBytes: statusError "store full: …" (a Set's
//     connection is closed, since its body is left unread);
//   - more than MaxConns connections at once: the handshake answers busy, and Dial retries
//     until its context ends ("the store is busy: …");
//   - more than 256 connections still proving their token: new ones are closed at once
//     (Dial retries those too), so a flood of idle connections cannot crowd out the job's;
//   - no token proof within 10 s of connecting, a frame not finished 30 s after its first
//     byte, or a response not taken within 30 s: the connection is closed. An idle
//     authenticated connection (between requests, or in a Wait) has no deadline.
const (
	// MaxConns is the most connections a server serves at once.
	MaxConns = 4096
	// MaxStoreBytes bounds the keys and values stored, plus the bodies being read.
	MaxStoreBytes = 1 << 30
)

// limits are the bounds above, kept in the Server so that tests can shrink them.
type limits struct {
	conns      int           // connections at once, proving their token or not
	handshakes int           // connections still proving their token
	storeBytes int64         // keys and values stored, plus bodies being read
	handshake  time.Duration // from accepting a connection to the end of its token proof
	frame      time.Duration // to finish a frame after its first byte, or to write a response
}

var defaultLimits = limits{
	conns:      MaxConns,
	handshakes: 256,
	storeBytes: MaxStoreBytes,
	handshake:  10 * time.Second,
	frame:      30 * time.Second,
}

// Server is the store. Values live in memory for the life of the job. Counters (Add) are
// stored as decimal ASCII, so Get on a counter returns e.g. "3" and Set("k", "5") followed by
// Add("k", 1) gives 6.
type Server struct {
	token string
	log   *slog.Logger
	lim   limits
	done  chan struct{} // closed by Close: wakes waiters and connection loops

	mu          sync.Mutex
	closed      bool
	data        map[string][]byte
	waiters     map[string]*waiter // removed when the key is set or its last waiter leaves
	listeners   map[net.Listener]struct{}
	conns       map[net.Conn]struct{}
	handshaking int            // connections in conns still proving their token
	held        int64          // bytes of keys and values in data, plus bodies being read
	wg          sync.WaitGroup // Serve calls and connection loops
}

// NewServer returns a store that serves clients proving token. A nil logger discards the
// server's diagnostics.
func NewServer(token string, logger *slog.Logger) *Server {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Server{
		token:     token,
		log:       logger,
		lim:       defaultLimits,
		done:      make(chan struct{}),
		data:      map[string][]byte{},
		waiters:   map[string]*waiter{},
		listeners: map[net.Listener]struct{}{},
		conns:     map[net.Conn]struct{}{},
	}
}

// Serve accepts connections on ln and serves each on its own goroutine until Close, then
// returns nil. Running out of file descriptors or memory is waited out (with a warning), as
// net/http does; Serve returns an error only if Accept fails for another reason.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ln.Close()
		return nil
	}
	s.listeners[ln] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()
	var pause time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			if closed || !acceptRetryable(err) {
				delete(s.listeners, ln)
			}
			s.mu.Unlock()
			if closed {
				return nil
			}
			if !acceptRetryable(err) {
				ln.Close()
				return fmt.Errorf("rendezvous: accept: %w", err)
			}
			pause = min(max(2*pause, 5*time.Millisecond), time.Second)
			s.log.Warn("rendezvous: accept failed, retrying", "err", err, "in", pause)
			select {
			case <-time.After(pause):
			case <-s.done:
			}
			continue
		}
		pause = 0
		busy, ok := s.admit(c)
		if !ok {
			continue
		}
		go func() {
			defer s.wg.Done()
			s.serve(c, busy)
		}()
	}
}

// acceptRetryable reports an Accept error that a later Accept may not have: the process or
// the system is out of descriptors or buffers, or a pending connection was reset.
func acceptRetryable(err error) bool {
	for _, e := range []error{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// ServeConn serves one connection until the peer hangs up, breaks the protocol, or the
// server is closed. It blocks; Close closes c and waits for ServeConn to return.
func (s *Server) ServeConn(c net.Conn) {
	busy, ok := s.admit(c)
	if !ok {
		return
	}
	defer s.wg.Done()
	s.serve(c, busy)
}

// admit registers c for Close, counts its loop in s.wg and counts it as proving its token.
// It closes c and reports false when the server is closed or already has its limit of
// connections proving their token; busy means that c is over the limit of connections and
// is to be told so.
func (s *Server) admit(c net.Conn) (busy, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.handshaking >= s.lim.handshakes {
		if !s.closed {
			s.log.Debug("rendezvous: too many connections proving their token; closing a new one", "peer", c.RemoteAddr().String())
		}
		c.Close()
		return false, false
	}
	s.conns[c] = struct{}{}
	s.handshaking++
	s.wg.Add(1)
	return len(s.conns) > s.lim.conns, true
}

// Close stops the server: it closes every listener and connection and wakes every waiter
// (their clients get an error). It returns after every Serve call and connection loop has
// ended. It is idempotent.
func (s *Server) Close() error {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		close(s.done)
		for ln := range s.listeners {
			ln.Close()
		}
		for c := range s.conns {
			c.Close()
		}
	}
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}

// frame is what a connection's reader hands its handler: a request or why reading stopped.
// reserved is the part of s.held that the request's body holds until it is handled.
type frame struct {
	req      request
	reserved int64
	err      error
}

func (s *Server) serve(c net.Conn, busy bool) {
	proving := true
	defer func() {
		c.Close()
		s.mu.Lock()
		delete(s.conns, c)
		if proving {
			s.handshaking--
		}
		s.mu.Unlock()
	}()
	log := s.log.With("peer", c.RemoteAddr().String())
	ok := s.handshake(c, busy, log)
	s.mu.Lock()
	s.handshaking--
	proving = false
	s.mu.Unlock()
	if !ok {
		return
	}

	// The reader runs ahead of the handler so that a wait notices its client hanging up.
	// The protocol is strict request/response, so a frame that arrives during a wait can
	// only mean a broken client: the wait ends and so does the connection.
	br := bufio.NewReader(c)
	frames := make(chan frame)
	quit := make(chan struct{})
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		defer close(frames)
		for {
			f := s.readFrame(c, br)
			select {
			case frames <- f:
			case <-quit:
				s.release(f.reserved)
				return
			}
			if f.err != nil {
				return
			}
		}
	}()
	defer func() {
		close(quit)
		c.Close() // unblocks the reader's Read
		<-readerDone
	}()

	for {
		var f frame
		select {
		case f = <-frames:
		case <-s.done:
			return
		}
		if f.err != nil {
			var fe *frameError
			switch {
			case errors.As(f.err, &fe):
				log.Warn("rendezvous: refusing frame", "err", f.err)
				c.SetWriteDeadline(time.Now().Add(s.lim.frame))
				writeResponse(c, response{status: statusError, value: []byte(fe.msg)})
			case errors.Is(f.err, os.ErrDeadlineExceeded):
				log.Warn("rendezvous: closing a connection that stalled in the middle of a frame", "limit", s.lim.frame)
			case f.err != io.EOF && !errors.Is(f.err, net.ErrClosed):
				log.Debug("rendezvous: read", "err", f.err)
			}
			return
		}
		p, ok := s.handle(f, frames)
		if !ok {
			return
		}
		c.SetWriteDeadline(time.Now().Add(s.lim.frame))
		if err := writeResponse(c, p); err != nil {
			log.Warn("rendezvous: closing a connection that does not take its response", "err", err)
			return
		}
	}
}

// handshake runs the token proof of a new connection (or tells it that the server is busy)
// within the handshake limit.
func (s *Server) handshake(c net.Conn, busy bool, log *slog.Logger) bool {
	c.SetDeadline(time.Now().Add(s.lim.handshake))
	code := codeOK
	if busy {
		code = codeBusy
	}
	err := handshakeAccept(c, s.token, storeLabel, code)
	switch {
	case err == nil:
		c.SetDeadline(time.Time{})
		return true
	case errors.Is(err, ErrTokenMismatch):
		log.Warn("rendezvous: refusing a connection that does not hold the job token (another job's worker?)")
	case errors.Is(err, errBusy):
		log.Warn("rendezvous: refusing a connection: the store serves its limit of connections", "limit", s.lim.conns)
	default:
		log.Debug("rendezvous: connection closed before proving the token", "err", err)
	}
	return false
}

// readFrame reads the next request. An idle connection may wait for its next request
// forever, but once the first byte has come the whole frame must follow within the frame
// limit; and the body is read only once the store has room for it.
func (s *Server) readFrame(c net.Conn, br *bufio.Reader) frame {
	if _, err := br.Peek(1); err != nil {
		return frame{err: err}
	}
	c.SetReadDeadline(time.Now().Add(s.lim.frame))
	h, err := readReqHeader(br)
	if err != nil {
		return frame{err: noEOF(err)}
	}
	if err := h.check(); err != nil {
		return frame{err: err}
	}
	n := h.size()
	if err := s.reserve(n); err != nil {
		return frame{err: err}
	}
	q, err := readReqBody(br, h)
	if err != nil {
		s.release(n)
		return frame{err: err}
	}
	c.SetReadDeadline(time.Time{})
	return frame{req: q, reserved: n}
}

// reserve counts n bytes of a body about to be read against the store's limit.
func (s *Server) reserve(n int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.held+n > s.lim.storeBytes {
		return &frameError{fmt.Sprintf("store full: a frame of %d bytes does not fit (%d of %d bytes held)", n, s.held, s.lim.storeBytes)}
	}
	s.held += n
	return nil
}

func (s *Server) release(n int64) {
	if n == 0 {
		return
	}
	s.mu.Lock()
	s.held -= n
	s.mu.Unlock()
}

// handle answers one request and releases what its body reserved. It reports false when
// the connection must end without a response (the server is closing, or the client left
// during a wait).
func (s *Server) handle(f frame, frames <-chan frame) (response, bool) {
	q := f.req
	if q.op == opSet {
		// The reservation becomes the stored entry (which is no larger than the frame).
		s.mu.Lock()
		s.setLocked(q.key, q.value)
		s.held -= f.reserved
		s.mu.Unlock()
		return response{status: statusOK}, true
	}
	s.release(f.reserved)
	switch q.op {
	case opGet:
		s.mu.Lock()
		v, ok := s.data[q.key]
		s.mu.Unlock()
		if !ok {
			return response{status: statusNotFound}, true
		}
		return response{status: statusOK, value: v}, true
	case opAdd:
		n, err := s.add(q.key, q.arg)
		if err != nil {
			return response{status: statusError, value: []byte(err.Error())}, true
		}
		return response{status: statusOK, arg: n}, true
	case opWait:
		return s.wait(q.key, time.Duration(q.arg), frames)
	}
	return response{status: statusError, value: []byte("unknown " + q.op.String())}, true
}

// setLocked stores a value, counts it in s.held and wakes the key's waiters. Stored slices
// are never modified afterwards, so they are written to connections without copying.
func (s *Server) setLocked(key string, value []byte) {
	if old, ok := s.data[key]; ok {
		s.held -= int64(len(key) + len(old))
	}
	s.held += int64(len(key) + len(value))
	s.data[key] = value
	if w, ok := s.waiters[key]; ok {
		close(w.set)
		delete(s.waiters, key)
	}
}

// waiter is the connections waiting for one key.
type waiter struct {
	set chan struct{} // closed when the key is set
	n   int           // connections waiting
}

func (s *Server) add(key string, delta int64) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var cur int64
	old, exists := s.data[key]
	if exists {
		var err error
		if cur, err = strconv.ParseInt(string(old), 10, 64); err != nil {
			return 0, fmt.Errorf("value of %q is not a decimal int64 counter", key)
		}
	}
	if (delta > 0 && cur > math.MaxInt64-delta) || (delta < 0 && cur < math.MinInt64-delta) {
		return 0, fmt.Errorf("counter %q overflows: %d + %d", key, cur, delta)
	}
	cur += delta
	v := strconv.AppendInt(nil, cur, 10)
	grow := int64(len(v) - len(old))
	if !exists {
		grow += int64(len(key))
	}
	if grow > 0 && s.held+grow > s.lim.storeBytes {
		return 0, fmt.Errorf("store full: counter %q needs %d more bytes (%d of %d bytes held)", key, grow, s.held, s.lim.storeBytes)
	}
	s.setLocked(key, v)
	return cur, nil
}

func (s *Server) wait(key string, timeout time.Duration, frames <-chan frame) (response, bool) {
	s.mu.Lock()
	if v, ok := s.data[key]; ok {
		s.mu.Unlock()
		return response{status: statusOK, value: v}, true
	}
	w, ok := s.waiters[key]
	if !ok {
		w = &waiter{set: make(chan struct{})}
		s.waiters[key] = w
	}
	w.n++
	s.mu.Unlock()
	// A wait that ends before the key is set takes its entry away with the last waiter, so
	// timed waits on ever new keys leave nothing behind.
	defer func() {
		s.mu.Lock()
		if w.n--; w.n == 0 && s.waiters[key] == w {
			delete(s.waiters, key)
		}
		s.mu.Unlock()
	}()

	var expired <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		expired = t.C
	}
	select {
	case <-w.set:
		s.mu.Lock()
		v := s.data[key]
		s.mu.Unlock()
		return response{status: statusOK, value: v}, true
	case <-expired:
		return response{status: statusTimeout}, true
	case <-s.done:
		return response{}, false
	case f := <-frames:
		s.release(f.reserved)
		return response{}, false
	}
}
