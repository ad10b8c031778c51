package rendezvous

import (
	"bufio"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"strconv"
	"sync"
	"time"
)

// helloTimeout bounds how long a new connection may take to present its token.
const helloTimeout = 10 * time.Second

// Server is the store. Values live in memory for the life of the job. Counters (Add) are
// stored as decimal ASCII, so Get on a counter returns e.g. "3" and Set("k", "5") followed by
// Add("k", 1) gives 6.
type Server struct {
	token []byte
	log   *slog.Logger
	done  chan struct{} // closed by Close: wakes waiters and connection loops

	mu        sync.Mutex
	closed    bool
	data      map[string][]byte
	waiters   map[string]chan struct{} // closed (and removed) when the key is set
	listeners map[net.Listener]struct{}
	conns     map[net.Conn]struct{}
	wg        sync.WaitGroup // Serve calls and connection loops
}

// NewServer returns a store that accepts connections presenting token. A nil logger
// discards the server's diagnostics.
func NewServer(token string, logger *slog.Logger) *Server {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Server{
		token:     []byte(token),
		log:       logger,
		done:      make(chan struct{}),
		data:      map[string][]byte{},
		waiters:   map[string]chan struct{}{},
		listeners: map[net.Listener]struct{}{},
		conns:     map[net.Conn]struct{}{},
	}
}

// Serve accepts connections on ln and serves each on its own goroutine until Close, then
// returns nil. It returns an error if Accept fails for another reason.
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
	for {
		c, err := ln.Accept()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			delete(s.listeners, ln)
			s.mu.Unlock()
			if closed {
				return nil
			}
			ln.Close()
			return fmt.Errorf("rendezvous: accept: %w", err)
		}
		if !s.track(c) {
			return nil
		}
		go func() {
			defer s.wg.Done()
			s.serve(c)
		}()
	}
}

// ServeConn serves one connection until the peer hangs up, breaks the protocol, or the
// server is closed. It blocks; Close closes c and waits for ServeConn to return.
func (s *Server) ServeConn(c net.Conn) {
	if !s.track(c) {
		return
	}
	defer s.wg.Done()
	s.serve(c)
}

// track registers c for Close and counts its loop in s.wg. It closes c and reports false
// when the server is already closed.
func (s *Server) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		c.Close()
		return false
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	return true
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
type frame struct {
	req request
	err error
}

func (s *Server) serve(c net.Conn) {
	defer func() {
		c.Close()
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
	}()
	log := s.log.With("peer", c.RemoteAddr().String())
	br := bufio.NewReader(c)
	if !s.hello(c, br, log) {
		return
	}

	// The reader runs ahead of the handler so that a wait notices its client hanging up.
	// The protocol is strict request/response, so a frame that arrives during a wait can
	// only mean a broken client: the wait ends and so does the connection.
	frames := make(chan frame)
	quit := make(chan struct{})
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		defer close(frames)
		for {
			q, err := readRequest(br, true)
			select {
			case frames <- frame{q, err}:
			case <-quit:
				return
			}
			if err != nil {
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
			if errors.As(f.err, &fe) {
				log.Warn("rendezvous: refusing frame", "err", f.err)
				writeResponse(c, response{status: statusError, value: []byte(fe.msg)})
			} else if f.err != io.EOF && !errors.Is(f.err, net.ErrClosed) {
				log.Debug("rendezvous: read", "err", f.err)
			}
			return
		}
		p, ok := s.handle(f.req, frames)
		if !ok {
			return
		}
		if err := writeResponse(c, p); err != nil {
			log.Debug("rendezvous: write", "err", err)
			return
		}
	}
}

// hello checks the token of a new connection and answers it.
func (s *Server) hello(c net.Conn, br *bufio.Reader, log *slog.Logger) bool {
	c.SetReadDeadline(time.Now().Add(helloTimeout))
	q, err := readRequest(br, false)
	if err != nil {
		var fe *frameError
		if errors.As(err, &fe) {
			writeResponse(c, response{status: statusError, value: []byte(fe.msg)})
		}
		log.Warn("rendezvous: connection closed before presenting a token", "err", err)
		return false
	}
	c.SetReadDeadline(time.Time{})
	if subtle.ConstantTimeCompare(q.value, s.token) != 1 {
		log.Warn("rendezvous: refusing a connection with a wrong token")
		writeResponse(c, response{status: statusBadToken})
		return false
	}
	if q.arg != protoVersion {
		msg := fmt.Sprintf("protocol version %d, the store speaks %d", q.arg, protoVersion)
		writeResponse(c, response{status: statusError, value: []byte(msg)})
		return false
	}
	return writeResponse(c, response{status: statusOK}) == nil
}

// handle answers one request. It reports false when the connection must end without a
// response (the server is closing, or the client left during a wait).
func (s *Server) handle(q request, frames <-chan frame) (response, bool) {
	switch q.op {
	case opSet:
		s.mu.Lock()
		s.setLocked(q.key, q.value)
		s.mu.Unlock()
		return response{status: statusOK}, true
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

// setLocked stores a value and wakes the key's waiters. Stored slices are never modified
// afterwards, so they are written to connections without copying.
func (s *Server) setLocked(key string, value []byte) {
	s.data[key] = value
	if ch, ok := s.waiters[key]; ok {
		close(ch)
		delete(s.waiters, key)
	}
}

func (s *Server) add(key string, delta int64) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var cur int64
	if v, ok := s.data[key]; ok {
		var err error
		if cur, err = strconv.ParseInt(string(v), 10, 64); err != nil {
			return 0, fmt.Errorf("value of %q is not a decimal int64 counter", key)
		}
	}
	if (delta > 0 && cur > math.MaxInt64-delta) || (delta < 0 && cur < math.MinInt64-delta) {
		return 0, fmt.Errorf("counter %q overflows: %d + %d", key, cur, delta)
	}
	cur += delta
	s.setLocked(key, strconv.AppendInt(nil, cur, 10))
	return cur, nil
}

func (s *Server) wait(key string, timeout time.Duration, frames <-chan frame) (response, bool) {
	s.mu.Lock()
	if v, ok := s.data[key]; ok {
		s.mu.Unlock()
		return response{status: statusOK, value: v}, true
	}
	ch, ok := s.waiters[key]
	if !ok {
		ch = make(chan struct{})
		s.waiters[key] = ch
	}
	s.mu.Unlock()

	var expired <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		expired = t.C
	}
	select {
	case <-ch:
		s.mu.Lock()
		v := s.data[key]
		s.mu.Unlock()
		return response{status: statusOK, value: v}, true
	case <-expired:
		return response{status: statusTimeout}, true
	case <-s.done:
		return response{}, false
	case <-frames:
		return response{}, false
	}
}
