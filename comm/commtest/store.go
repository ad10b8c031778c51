// Package commtest holds helpers for testing communicators inside one process: an
// in-memory rendezvous store, a runner that starts a whole group of ranks as goroutines,
// and the deterministic data patterns that make a collective's result checkable.
package commtest

import (
	"context"
	"fmt"
	"strconv"
	"sync"

	"github.com/moerun/moerun/comm"
)

// MemStore is an in-memory comm.Store shared by the ranks of one process.
type MemStore struct {
	mu      sync.Mutex
	data    map[string][]byte
	changed chan struct{} // closed and replaced on every write
}

var _ comm.Store = (*MemStore)(nil)

// NewMemStore returns an empty store.
func NewMemStore() *MemStore {
	return &MemStore{data: map[string][]byte{}, changed: make(chan struct{})}
}

func (s *MemStore) notify() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// Set stores a copy of value under key.
func (s *MemStore) Set(ctx context.Context, key string, value []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.data[key] = append([]byte(nil), value...)
	s.notify()
	return nil
}

// Wait returns the value of key once it is set, or ctx's error.
func (s *MemStore) Wait(ctx context.Context, key string) ([]byte, error) {
	for {
		s.mu.Lock()
		v, ok := s.data[key]
		ch := s.changed
		s.mu.Unlock()
		if ok {
			return append([]byte(nil), v...), nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, fmt.Errorf("wait for %q: %w", key, ctx.Err())
		}
	}
}

// Add adds delta to the decimal counter under key and returns the new value.
func (s *MemStore) Add(ctx context.Context, key string, delta int64) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var v int64
	if old, ok := s.data[key]; ok {
		var err error
		if v, err = strconv.ParseInt(string(old), 10, 64); err != nil {
			return 0, fmt.Errorf("add to %q: not a counter", key)
		}
	}
	v += delta
	s.data[key] = []byte(strconv.FormatInt(v, 10))
	s.notify()
	return v, nil
}
