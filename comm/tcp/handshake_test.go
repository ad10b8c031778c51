package tcp

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/moerun/moerun/comm"
	"github.com/moerun/moerun/comm/commtest"
	"github.com/moerun/moerun/rendezvous"
)

const (
	tokenA = "0123456789abcdef0123456789abcdef"
	tokenB = "fedcba9876543210fedcba9876543210"
)

// openRanks opens one ring of len(tokens) ranks in this process, rank r with tokens[r]
// (open chooses how), and returns each rank's communicator and error.
func openRanks(t *testing.T, store comm.Store, tokens []string, open func(r int, cfg comm.Config) (comm.Communicator, error)) ([]comm.Communicator, []error) {
	t.Helper()
	n := len(tokens)
	comms, errs := make([]comm.Communicator, n), make([]error, n)
	var wg sync.WaitGroup
	for r := range n {
		wg.Go(func() {
			cfg := comm.Config{Rank: r, Size: n, Store: store, Namespace: "test", Token: tokens[r],
				Timeout: 5 * time.Second, Logger: slog.New(slog.DiscardHandler)}
			comms[r], errs[r] = open(r, cfg)
		})
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, c := range comms {
			if c != nil {
				c.Close()
			}
		}
	})
	return comms, errs
}

func noCMA(_ int, cfg comm.Config) (comm.Communicator, error) {
	return Options{NoCMA: true}.Open(context.Background(), cfg)
}

// Ranks whose tokens differ refuse each other at once rather than waiting out their
// timeout. The rank that first finds the mismatch says so; the other may instead see its
// successor hang up, since a rank that cannot join its successor stops accepting.
func TestRingRefusesAnotherToken(t *testing.T) {
	start := time.Now()
	_, errs := openRanks(t, commtest.NewMemStore(), []string{tokenA, tokenB}, noCMA)
	mismatches := 0
	for r, err := range errs {
		if err == nil {
			t.Errorf("rank %d: Open succeeded with another rank's token", r)
		}
		if errors.Is(err, rendezvous.ErrTokenMismatch) && strings.Contains(err.Error(), "does not hold this job's token") {
			mismatches++
		}
	}
	if mismatches == 0 {
		t.Errorf("Open = %v; want a token mismatch on some rank", errs)
	}
	if d := time.Since(start); d > 4*time.Second {
		t.Errorf("Open took %v to refuse, want well under its 5s timeout", d)
	}
}

// Open (the registered entry point) takes the token from MOERUN_TOKEN when the config has
// none: a rank given tokenA that way and a rank given tokenB in its config refuse each other.
func TestOpenReadsTokenFromEnv(t *testing.T) {
	t.Setenv(rendezvous.EnvToken, tokenA)
	t.Setenv("MOERUN_TCP_CMA", "0")
	_, errs := openRanks(t, commtest.NewMemStore(), []string{"", tokenB}, func(r int, cfg comm.Config) (comm.Communicator, error) {
		return Open(context.Background(), cfg)
	})
	if !errors.Is(errs[0], rendezvous.ErrTokenMismatch) && !errors.Is(errs[1], rendezvous.ErrTokenMismatch) {
		t.Errorf("Open = %v; want a token mismatch", errs)
	}
}

// strayStore is a store that, before it publishes rank 1's address, points strays at it:
// connections that stall, that send garbage, and that dial with another job's token.
type strayStore struct {
	*commtest.MemStore
	t        *testing.T
	mu       sync.Mutex
	strays   []net.Conn
	impostor chan error // the other token's proof, as its dialer saw it
}

func (s *strayStore) Set(ctx context.Context, key string, value []byte) error {
	if strings.HasSuffix(key, "/tcp/addr/1") {
		addr := string(value)
		for range 3 {
			s.stray(addr) // stalls: connects and sends nothing
		}
		s.stray(addr).Write([]byte("GET / HTTP/1.1\r\n\r\n" + strings.Repeat("x", 100)))
		imp := s.stray(addr)
		go func() {
			imp.SetDeadline(time.Now().Add(5 * time.Second))
			s.impostor <- rendezvous.HandshakeDial(imp, tokenB, "moerun-tcp-ring/2\x00test\x000>1/2")
		}()
	}
	return s.MemStore.Set(ctx, key, value)
}

func (s *strayStore) stray(addr string) net.Conn {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		s.t.Errorf("stray: %v", err)
		return &net.TCPConn{}
	}
	s.mu.Lock()
	s.strays = append(s.strays, c)
	s.mu.Unlock()
	return c
}

// Strays at a rank's port while it waits for its predecessor neither stop the ring from
// forming nor delay it by their stalls, the one with another token is refused, and data
// flows once the ring is up.
func TestRingIgnoresStrays(t *testing.T) {
	store := &strayStore{MemStore: commtest.NewMemStore(), t: t, impostor: make(chan error, 1)}
	t.Cleanup(func() {
		for _, c := range store.strays {
			c.Close()
		}
	})
	start := time.Now()
	comms, errs := openRanks(t, store, []string{tokenA, tokenA}, noCMA)
	for r, err := range errs {
		if err != nil {
			t.Fatalf("rank %d: Open with strays at the port: %v", r, err)
		}
	}
	if d := time.Since(start); d >= ringHandshake {
		t.Errorf("the ring took %v to form: the stalled strays held it up", d)
	}
	// The impostor is refused by the proof, or — when the ring formed first and the rank
	// stopped accepting, which a loaded machine makes likely — by the connection's close:
	// either way it never gets in.
	if err := <-store.impostor; err == nil ||
		!(errors.Is(err, rendezvous.ErrTokenMismatch) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed)) {
		t.Errorf("a dialer with another token: %v; want refused", err)
	}
	allReduce(t, comms)
}

// With a token, rings and their splits work as before.
func TestRingWithToken(t *testing.T) {
	open := func(ctx context.Context, cfg comm.Config) (comm.Communicator, error) {
		cfg.Token = tokenA
		return Options{NoCMA: true}.Open(ctx, cfg)
	}
	err := commtest.RunGroup(t.Context(), open, 3, func(ctx context.Context, c comm.Communicator) error {
		sub, err := c.Split(ctx, c.Rank()%2, 0)
		if err != nil {
			return err
		}
		defer sub.Close()
		v := []float32{1}
		if err := sub.AllReduce(ctx, comm.Float32s(v), comm.Float32s(v)); err != nil {
			return err
		}
		if got, want := v[0], float32(sub.Size()); got != want {
			t.Errorf("rank %d: sum over its split = %v, want %v", c.Rank(), got, want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// allReduce sums 1 over comms (one goroutine per rank) and checks the result.
func allReduce(t *testing.T, comms []comm.Communicator) {
	t.Helper()
	var wg sync.WaitGroup
	for _, c := range comms {
		wg.Go(func() {
			v := []float32{1, 1, 1, 1}
			if err := c.AllReduce(t.Context(), comm.Float32s(v), comm.Float32s(v)); err != nil {
				t.Errorf("rank %d: all-reduce: %v", c.Rank(), err)
				return
			}
			if got := v[0]; got != float32(len(comms)) {
				t.Errorf("rank %d: all-reduce gave %v, want %d", c.Rank(), got, len(comms))
			}
		})
	}
	wg.Wait()
}
