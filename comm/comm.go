// Package comm owns the caller-facing communicator: the Communicator interface that every
// backend (comm/tcp on CPUs, comm/nccl on GPUs) implements, the registry of backends by
// name, and the checks that are the same for every backend (lengths, types, counts, rank
// ranges), applied once by a wrapper so that backends can assume valid arguments and every
// error names the rank and the collective. It does not know which backend it runs on.
package comm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/moerun/moerun/dtype"
)

// Communicator is a group of ranks that run collectives together. Every rank of the group
// must call the same collectives in the same order with matching arguments. Every blocking
// call takes a context: its deadline bounds the call, and a rank that gives up leaves the
// communicator broken (Close it). Reductions are sums. Counts are in elements.
type Communicator interface {
	// Rank is this process's rank in the group, in [0, Size()).
	Rank() int
	// Size is the number of ranks in the group.
	Size() int
	// AllGather concatenates every rank's send (n elements each) into recv (Size()·n), in
	// rank order.
	AllGather(ctx context.Context, send, recv Buffer) error
	// AllGatherV is AllGather with counts[i] elements from rank i (zeros allowed);
	// send has counts[Rank()] elements and recv has the sum of counts.
	AllGatherV(ctx context.Context, send, recv Buffer, counts []int) error
	// ReduceScatter sums send (Size()·n elements) over the ranks and leaves block Rank()
	// of the sum (n elements) in recv.
	ReduceScatter(ctx context.Context, send, recv Buffer) error
	// ReduceScatterV is ReduceScatter with blocks of counts[i] elements (zeros allowed);
	// send has the sum of counts and recv has counts[Rank()].
	ReduceScatterV(ctx context.Context, send, recv Buffer, counts []int) error
	// AllReduce leaves the sum of every rank's send in recv (send and recv may be the same).
	AllReduce(ctx context.Context, send, recv Buffer) error
	// Broadcast copies root's buf into every other rank's buf.
	Broadcast(ctx context.Context, buf Buffer, root int) error
	// Barrier returns once every rank has entered it.
	Barrier(ctx context.Context) error
	// Split is collective over this group: ranks that pass the same color form a new
	// group, ordered by key and then by rank in this group. A negative color returns a
	// nil Communicator (the rank joins no group), like MPI_UNDEFINED.
	Split(ctx context.Context, color, key int) (Communicator, error)
	// Close releases the communicator's resources. It is not collective.
	Close() error
}

// ErrPeerLost marks a collective that failed because another rank went away (its
// connection closed, its process is gone, or it reported its own failure). It is a
// consequence, not a cause: a worker that sees it lets the launcher report the rank that
// failed first.
var ErrPeerLost = errors.New("a peer rank failed or left")

// Store is the part of the rendezvous store that backends need to find each other.
type Store interface {
	Set(ctx context.Context, key string, value []byte) error
	Wait(ctx context.Context, key string) ([]byte, error)
	Add(ctx context.Context, key string, delta int64) (int64, error)
}

// Memory is where a communicator's buffers live when that is not host memory (device
// memory for GPU backends): how to allocate them, fill them from host buffers, read them
// back, and wait for the collectives enqueued so far (GPU collectives return before they
// complete).
type Memory interface {
	Alloc(t dtype.DType, n int) (Buffer, error)
	Free(b Buffer) error
	Upload(dst, src Buffer) error   // src in host memory
	Download(dst, src Buffer) error // dst in host memory
	Sync(ctx context.Context) error
}

// MemoryOf is the memory c's buffers must live in, or nil when host buffers will do.
func MemoryOf(c Communicator) Memory {
	if m, ok := c.(interface{ Memory() Memory }); ok {
		return m.Memory()
	}
	return nil
}

// Config is what a backend needs to build the world communicator.
type Config struct {
	Rank, Size int
	// Store is where ranks exchange addresses; keys are prefixed by Namespace.
	Store     Store
	Namespace string
	// Device is the GPU ordinal of this rank for device backends (-1 for none).
	Device int
	// Host is the address this rank listens on and advertises to its peers (an interface
	// address that the other hosts can reach); empty means 127.0.0.1 (one host).
	Host string
	// Timeout bounds each wait for a peer (connection set-up, a collective's receive)
	// when the caller's context has no earlier deadline. Zero means no bound.
	Timeout time.Duration
	// Logger receives backend diagnostics; nil means slog.Default().
	Logger *slog.Logger
	// Token is the job's secret (the store token, MOERUN_TOKEN; never log it). Backends
	// that connect ranks to each other directly (tcp) make every peer prove it before any
	// data flows. Empty: the tcp backend's Open reads MOERUN_TOKEN, and without one (ranks
	// in one process over an in-memory store, as in tests) peers prove only that they
	// speak the protocol for this group.
	Token string
}

// OpenFunc builds a backend's world communicator. It is called by every rank.
type OpenFunc func(ctx context.Context, cfg Config) (Communicator, error)

var (
	registryMu sync.RWMutex
	registry   = map[string]OpenFunc{}
)

// Register makes a backend available by name. It panics on a nil function or a duplicate
// name: both are programming errors at init time.
func Register(name string, open OpenFunc) {
	registryMu.Lock()
	defer registryMu.Unlock()
	if open == nil {
		panic("comm: Register of a nil OpenFunc for " + name)
	}
	if _, dup := registry[name]; dup {
		panic("comm: Register called twice for backend " + name)
	}
	registry[name] = open
}

// Backends lists the registered backend names, sorted.
func Backends() []string {
	registryMu.RLock()
	defer registryMu.RUnlock()
	names := make([]string, 0, len(registry))
	for n := range registry {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Open builds the world communicator of the named backend, wrapped with the shared checks.
func Open(ctx context.Context, backend string, cfg Config) (Communicator, error) {
	registryMu.RLock()
	open := registry[backend]
	registryMu.RUnlock()
	if open == nil {
		return nil, fmt.Errorf("comm: unknown backend %q (registered: %v; forgotten import of comm/%s?)", backend, Backends(), backend)
	}
	if cfg.Size < 1 || cfg.Rank < 0 || cfg.Rank >= cfg.Size {
		return nil, fmt.Errorf("comm: rank %d of world size %d: expected 0 <= rank < size", cfg.Rank, cfg.Size)
	}
	if cfg.Store == nil {
		return nil, fmt.Errorf("comm: rank %d: no rendezvous store", cfg.Rank)
	}
	c, err := open(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("comm: rank %d: open %s backend: %w", cfg.Rank, backend, err)
	}
	return Checked(c), nil
}

// Checked wraps a backend's communicator with the argument checks and rank-tagged errors
// that are the same for every backend. Open applies it; tests of a backend use it too.
func Checked(c Communicator) Communicator {
	if c == nil {
		return nil
	}
	if _, ok := c.(*checked); ok {
		return c
	}
	return &checked{inner: c}
}

type checked struct{ inner Communicator }

func (c *checked) Rank() int { return c.inner.Rank() }
func (c *checked) Size() int { return c.inner.Size() }

func (c *checked) fail(op string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("rank %d of %d: %s: %w", c.inner.Rank(), c.inner.Size(), op, err)
}

func sameKind(a, b Buffer) error {
	if !a.DType().Float() {
		return fmt.Errorf("unsupported element type %v: collectives move float32 and bf16", a.DType())
	}
	if a.DType() != b.DType() {
		return fmt.Errorf("send is %v but recv is %v", a.DType(), b.DType())
	}
	if a.OnDevice() != b.OnDevice() || a.Device() != b.Device() {
		return fmt.Errorf("send (%v) and recv (%v) are in different memories", a, b)
	}
	return nil
}

func (c *checked) checkCounts(counts []int) (total int, err error) {
	if len(counts) != c.Size() {
		return 0, fmt.Errorf("%d counts for a group of %d ranks", len(counts), c.Size())
	}
	for i, n := range counts {
		if n < 0 {
			return 0, fmt.Errorf("counts[%d] = %d is negative", i, n)
		}
		total += n
	}
	return total, nil
}

func (c *checked) AllGather(ctx context.Context, send, recv Buffer) error {
	const op = "all-gather"
	if err := sameKind(send, recv); err != nil {
		return c.fail(op, err)
	}
	if recv.Len() != send.Len()*c.Size() {
		return c.fail(op, fmt.Errorf("recv has %d elements, want %d (send %d × %d ranks)", recv.Len(), send.Len()*c.Size(), send.Len(), c.Size()))
	}
	return c.fail(op, c.inner.AllGather(ctx, send, recv))
}

func (c *checked) AllGatherV(ctx context.Context, send, recv Buffer, counts []int) error {
	const op = "all-gather-v"
	if err := sameKind(send, recv); err != nil {
		return c.fail(op, err)
	}
	total, err := c.checkCounts(counts)
	if err != nil {
		return c.fail(op, err)
	}
	if send.Len() != counts[c.Rank()] {
		return c.fail(op, fmt.Errorf("send has %d elements, counts[%d] = %d", send.Len(), c.Rank(), counts[c.Rank()]))
	}
	if recv.Len() != total {
		return c.fail(op, fmt.Errorf("recv has %d elements, counts add up to %d", recv.Len(), total))
	}
	return c.fail(op, c.inner.AllGatherV(ctx, send, recv, slices.Clone(counts)))
}

func (c *checked) ReduceScatter(ctx context.Context, send, recv Buffer) error {
	const op = "reduce-scatter"
	if err := sameKind(send, recv); err != nil {
		return c.fail(op, err)
	}
	if send.Len() != recv.Len()*c.Size() {
		return c.fail(op, fmt.Errorf("send has %d elements, want %d (recv %d × %d ranks)", send.Len(), recv.Len()*c.Size(), recv.Len(), c.Size()))
	}
	return c.fail(op, c.inner.ReduceScatter(ctx, send, recv))
}

func (c *checked) ReduceScatterV(ctx context.Context, send, recv Buffer, counts []int) error {
	const op = "reduce-scatter-v"
	if err := sameKind(send, recv); err != nil {
		return c.fail(op, err)
	}
	total, err := c.checkCounts(counts)
	if err != nil {
		return c.fail(op, err)
	}
	if recv.Len() != counts[c.Rank()] {
		return c.fail(op, fmt.Errorf("recv has %d elements, counts[%d] = %d", recv.Len(), c.Rank(), counts[c.Rank()]))
	}
	if send.Len() != total {
		return c.fail(op, fmt.Errorf("send has %d elements, counts add up to %d", send.Len(), total))
	}
	return c.fail(op, c.inner.ReduceScatterV(ctx, send, recv, slices.Clone(counts)))
}

func (c *checked) AllReduce(ctx context.Context, send, recv Buffer) error {
	const op = "all-reduce"
	if err := sameKind(send, recv); err != nil {
		return c.fail(op, err)
	}
	if send.Len() != recv.Len() {
		return c.fail(op, fmt.Errorf("send has %d elements but recv has %d", send.Len(), recv.Len()))
	}
	return c.fail(op, c.inner.AllReduce(ctx, send, recv))
}

func (c *checked) Broadcast(ctx context.Context, buf Buffer, root int) error {
	const op = "broadcast"
	if !buf.DType().Float() {
		return c.fail(op, fmt.Errorf("unsupported element type %v: collectives move float32 and bf16", buf.DType()))
	}
	if root < 0 || root >= c.Size() {
		return c.fail(op, fmt.Errorf("root %d is not a rank of a group of %d", root, c.Size()))
	}
	return c.fail(op, c.inner.Broadcast(ctx, buf, root))
}

func (c *checked) Barrier(ctx context.Context) error {
	return c.fail("barrier", c.inner.Barrier(ctx))
}

func (c *checked) Split(ctx context.Context, color, key int) (Communicator, error) {
	sub, err := c.inner.Split(ctx, color, key)
	if err != nil {
		return nil, c.fail(fmt.Sprintf("split (color %d, key %d)", color, key), err)
	}
	return Checked(sub), nil
}

func (c *checked) Close() error { return c.fail("close", c.inner.Close()) }

// Memory forwards the backend's memory (see MemoryOf).
func (c *checked) Memory() Memory { return MemoryOf(c.inner) }

// Unwrap is the backend's own communicator, for backend-specific needs (the GPU device of
// an NCCL communicator).
func (c *checked) Unwrap() Communicator { return c.inner }

// AllGatherFloats all-gathers small host values (timings, counts, flags) through whatever
// memory c needs: host buffers directly, device buffers by a round trip.
func AllGatherFloats(ctx context.Context, c Communicator, mine, all []float32) error {
	m := MemoryOf(c)
	if m == nil {
		return c.AllGather(ctx, Float32s(mine), Float32s(all))
	}
	send, err := m.Alloc(dtype.Float32, len(mine))
	if err != nil {
		return err
	}
	defer m.Free(send)
	recv, err := m.Alloc(dtype.Float32, len(all))
	if err != nil {
		return err
	}
	defer m.Free(recv)
	if err := m.Upload(send, Float32s(mine)); err != nil {
		return err
	}
	if err := c.AllGather(ctx, send, recv); err != nil {
		return err
	}
	if err := m.Sync(ctx); err != nil {
		return err
	}
	return m.Download(Float32s(all), recv)
}

// Alias is c under another name: the same ranks in the same order, the same collectives,
// but Close does nothing (c's owner closes it). A group whose members are exactly another
// communicator's (vLLM's EP group of a dp-only layout is the world) needs no communicator
// of its own: on NCCL that saves a split, tens to hundreds of milliseconds of start-up.
func Alias(c Communicator) Communicator { return alias{c} }

type alias struct{ Communicator }

func (alias) Close() error { return nil }

// Memory and Unwrap reach through to c, so that backend-specific callers still find it.
func (a alias) Memory() Memory       { return MemoryOf(a.Communicator) }
func (a alias) Unwrap() Communicator { return a.Communicator }
