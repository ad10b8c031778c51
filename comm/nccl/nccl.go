// Package nccl is the GPU backend of comm: NCCL loaded at run time (dlopen, no headers at
// build time), communicators created non-blocking with their unique id exchanged through
// the rendezvous store, sub-groups by ncclCommSplit, every collective on device buffers
// enqueued on one stream, and every wait bounded: a deadline or an asynchronous error
// aborts the communicator so that no rank stays inside NCCL. It registers "nccl".
package nccl

/*
#include <stdlib.h>
#include "nccl_table.h"
*/
import "C"

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"github.com/moerun/moerun/comm"
	"github.com/moerun/moerun/dtype"
	"github.com/moerun/moerun/internal/dl"
)

// symbols lists nccl_table.h's table in order.
var symbols = []string{
	"ncclGetVersion", "ncclGetUniqueId", "ncclCommInitRankConfig", "ncclCommGetAsyncError",
	"ncclCommAbort", "ncclCommDestroy", "ncclCommFinalize", "ncclCommSplit",
	"ncclAllGather", "ncclReduceScatter", "ncclAllReduce", "ncclBroadcast", "ncclReduce",
	"ncclGroupStart", "ncclGroupEnd", "ncclGetErrorString", "ncclGetLastError",
	"ncclCommCount", "ncclCommUserRank",
}

// ncclResult_t values (nccl.h).
const (
	ncclSuccess    = 0
	ncclInProgress = 7
)

// Data types and reduction ops (nccl.h: ncclFloat32 = 7, ncclBfloat16 = 9, ncclSum = 0).
const (
	ncclFloat32  = 7
	ncclBfloat16 = 9
	ncclSum      = 0
)

var resultNames = []string{"ncclSuccess", "ncclUnhandledCudaError", "ncclSystemError", "ncclInternalError",
	"ncclInvalidArgument", "ncclInvalidUsage", "ncclRemoteError", "ncclInProgress", "ncclTimeout"}

// Result is an ncclResult_t other than ncclSuccess.
type Result int

func (r Result) Error() string {
	if int(r) >= 0 && int(r) < len(resultNames) {
		return resultNames[r]
	}
	return fmt.Sprintf("ncclResult %d", int(r))
}

// Error is a failed NCCL call, with NCCL's own last message when it has one.
type Error struct {
	Op     string
	Code   Result
	Detail string
}

func (e *Error) Error() string {
	if e.Detail != "" {
		return fmt.Sprintf("nccl: %s: %v (%s)", e.Op, e.Code, e.Detail)
	}
	return fmt.Sprintf("nccl: %s: %v", e.Op, e.Code)
}

func (e *Error) Unwrap() error { return e.Code }

// EnvLib overrides the NCCL library's path.
const EnvLib = "MOERUN_NCCL_LIB"

// Library is the loaded libnccl.
type Library struct {
	lib     *dl.Library
	Version int // e.g. 22803 for 2.28.3
}

var (
	loadMu sync.Mutex
	loaded *Library
	lerr   error
)

// Load opens NCCL once: MOERUN_NCCL_LIB, else libnccl.so.2 through the loader cache, else
// the Python wheel's copy.
func Load() (*Library, error) {
	loadMu.Lock()
	defer loadMu.Unlock()
	if loaded != nil || lerr != nil {
		return loaded, lerr
	}
	dirs := []string{"/usr/local/lib/python3*/dist-packages/nvidia/nccl/lib", "/usr/lib/python3/dist-packages/nvidia/nccl/lib"}
	if venv := os.Getenv("VIRTUAL_ENV"); venv != "" {
		dirs = append([]string{venv + "/lib/python3*/site-packages/nvidia/nccl/lib"}, dirs...)
	}
	loaded, lerr = load(dl.Candidates(EnvLib, []string{"libnccl.so.2"}, dirs, nil))
	return loaded, lerr
}

// load opens the first candidate that loads and binds the table.
func load(candidates []string) (*Library, error) {
	lib, err := dl.Open("NCCL (libnccl.so.2)", candidates)
	if err != nil {
		return nil, err
	}
	for i, name := range symbols {
		p, err := lib.Sym(name)
		if err != nil {
			lib.Close()
			return nil, fmt.Errorf("nccl: %w", err)
		}
		C.moe_nccl_set(C.int(i), p)
	}
	l := &Library{lib: lib}
	var v C.int
	if r := C.moe_ncclGetVersion(&v); r != ncclSuccess {
		return nil, &Error{Op: "ncclGetVersion", Code: Result(r)}
	}
	l.Version = int(v)
	return l, nil
}

// Path is the library that was loaded.
func (l *Library) Path() string { return l.lib.Path }

// VersionString is the version as major.minor.patch.
func (l *Library) VersionString() string {
	v := l.Version
	return fmt.Sprintf("%d.%d.%d", v/10000, v/100%100, v%100)
}

func errorString(r C.ncclResult_t) string { return C.GoString(C.moe_ncclGetErrorString(r)) }

// Comm is one rank's NCCL communicator. Collectives are enqueued on the device's stream
// and return before they complete; Sync waits, bounded by the context and the timeout.
type Comm struct {
	rank, size int
	comm       C.ncclComm_t
	dev        *device
	cfg        comm.Config
	// base is the non-blocking world this blocking communicator was split from (closed
	// with it); nil for split sub-groups.
	base *Comm

	mu     sync.Mutex
	broken error
}

var _ comm.Communicator = (*Comm)(nil)

// Open creates the world communicator on cfg.Device: rank 0 makes the unique id and
// publishes it in the store, every rank initialises non-blocking and polls until NCCL is
// ready or the deadline passes (then it aborts). The calling goroutine is locked to its OS
// thread for good: CUDA's current context and NCCL's group state live there.
func Open(ctx context.Context, cfg comm.Config) (comm.Communicator, error) {
	return open(ctx, cfg, os.Getenv(EnvWorld) == "blocking")
}

func open(ctx context.Context, cfg comm.Config, blockingWorld bool) (comm.Communicator, error) {
	runtime.LockOSThread()
	// NCCL connects peers lazily, at the first collective that needs them
	// (NCCL_RUNTIME_CONNECT=1, its default): start-up is 0.16–0.18 s shorter on 2 × H200
	// (docs/PERFORMANCE.md) and the first collective no slower there. A peer that dies
	// before connecting leaves that collective waiting; the launcher stops such a job
	// (a failed rank ends it, a hang is found after --timeout), as it does for every wait.
	// NCCL_RUNTIME_CONNECT=0 connects everything inside the abortable initialisation.
	lib, err := Load()
	if err != nil {
		return nil, err
	}
	tDev := time.Now()
	dev, err := openDevice(cfg.Device)
	if err != nil {
		return nil, err
	}
	devWait := time.Since(tDev)
	tID := time.Now()
	ctx, cancel := bound(ctx, cfg.Timeout)
	defer cancel()
	key := cfg.Namespace + "/nccl/id"
	var id C.ncclUniqueId
	idBytes := (*[128]byte)(unsafe.Pointer(&id))[:]
	if cfg.Rank == 0 {
		if r := C.moe_ncclGetUniqueId(&id); r != ncclSuccess {
			return nil, &Error{Op: "ncclGetUniqueId", Code: Result(r), Detail: errorString(r)}
		}
		if err := cfg.Store.Set(ctx, key, idBytes); err != nil {
			return nil, fmt.Errorf("publish the NCCL unique id: %w", err)
		}
	} else {
		v, err := cfg.Store.Wait(ctx, key)
		if err != nil {
			return nil, fmt.Errorf("NCCL unique id from rank 0: %w", err)
		}
		if len(v) != 128 {
			return nil, fmt.Errorf("NCCL unique id from rank 0 has %d bytes, want 128", len(v))
		}
		copy(idBytes, v)
	}
	idWait := time.Since(tID)
	if blockingWorld {
		return openBlocking(ctx, cfg, dev, lib, &id)
	}
	// The world is created non-blocking, so that a rank that never arrives ends in an
	// abort at the deadline, not in a hang inside NCCL.
	base := &Comm{rank: cfg.Rank, size: cfg.Size, dev: dev, cfg: cfg}
	var conf C.moe_ncclConfig
	C.moe_nccl_config_init(&conf, 0, C.INT_MIN)
	t0 := time.Now()
	r := C.moe_ncclCommInitRankConfig(&base.comm, C.int(cfg.Size), &id, C.int(cfg.Rank), &conf)
	if err := base.settle(ctx, "ncclCommInitRankConfig", r); err != nil {
		return nil, err
	}
	// Collectives go through a blocking copy of it: in non-blocking mode NCCL hands every
	// launch to a helper thread, which costs ~50 µs per collective (measured on 2 × H200:
	// 60-70 µs for an 8 KiB all-gather against 9 µs blocking). Blocking calls only enqueue:
	// waits for peers happen in Sync, which polls with a deadline and aborts.
	t1 := time.Now()
	hot, err := base.split(ctx, 0, cfg.Rank, 1)
	if err != nil {
		base.abort()
		return nil, err
	}
	hot.base = base
	if cfg.Logger != nil {
		cfg.Logger.Info("nccl: communicator ready", "rank", cfg.Rank, "size", cfg.Size, "library", lib.Path(), "version", lib.VersionString(),
			"device wait", devWait, "unique id", idWait, "init", t1.Sub(t0), "blocking split", time.Since(t1))
	}
	return hot, nil
}

// EnvWorld chooses how the world communicator is made: unset or "nonblocking" (the
// default): non-blocking, then a blocking split for the collectives; "blocking": blocking
// from the start (see openBlocking), one communicator fewer at start-up.
const EnvWorld = "MOERUN_NCCL_WORLD"

// openBlocking initialises the world communicator in blocking mode, which saves the split
// that the non-blocking world needs before its collectives are cheap (0.17–0.19 s of
// start-up on 2 × H200). A blocking initialisation cannot be aborted (NCCL returns no
// handle until it is done), so it runs on an OS thread of its own: past the deadline Open
// returns an error and leaves that thread waiting inside NCCL, for the process to end —
// which every caller does on an error from Open.
func openBlocking(ctx context.Context, cfg comm.Config, dev *device, lib *Library, id *C.ncclUniqueId) (comm.Communicator, error) {
	type result struct {
		comm C.ncclComm_t
		r    C.ncclResult_t
		err  error
	}
	done := make(chan result, 1)
	t0 := time.Now()
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with this goroutine
		if _, err := openDevice(cfg.Device); err != nil {
			done <- result{err: err}
			return
		}
		var conf C.moe_ncclConfig
		C.moe_nccl_config_init(&conf, 1, C.INT_MIN)
		var c C.ncclComm_t
		r := C.moe_ncclCommInitRankConfig(&c, C.int(cfg.Size), id, C.int(cfg.Rank), &conf)
		done <- result{comm: c, r: r}
	}()
	select {
	case res := <-done:
		if res.err != nil {
			return nil, res.err
		}
		c := &Comm{rank: cfg.Rank, size: cfg.Size, dev: dev, cfg: cfg, comm: res.comm}
		if res.r != ncclSuccess {
			return nil, c.fail("ncclCommInitRankConfig", res.r)
		}
		if cfg.Logger != nil {
			cfg.Logger.Info("nccl: communicator ready", "rank", cfg.Rank, "size", cfg.Size, "library", lib.Path(), "version", lib.VersionString(),
				"blocking init", time.Since(t0))
		}
		return c, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("nccl: ncclCommInitRankConfig (blocking, %s=blocking) did not finish: %w; its thread is left inside NCCL until the process ends", EnvWorld, ctx.Err())
	}
}

func init() { comm.Register("nccl", Open) }

// bound applies the configured timeout when ctx has no earlier deadline.
func bound(ctx context.Context, timeout time.Duration) (context.Context, context.CancelFunc) {
	if timeout <= 0 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, timeout)
}

// settle turns the immediate result r of a call into an error, and, in non-blocking
// mode, polls the communicator until the call has finished (ncclInProgress → done). On a
// deadline or an asynchronous error it aborts the communicator.
func (c *Comm) settle(ctx context.Context, op string, r C.ncclResult_t) error {
	if r != ncclSuccess && r != ncclInProgress {
		return c.fail(op, r)
	}
	return c.poll(ctx, op, func() (bool, error) {
		var state C.ncclResult_t
		if q := C.moe_ncclCommGetAsyncError(c.comm, &state); q != ncclSuccess {
			return false, c.fail("ncclCommGetAsyncError", q)
		}
		switch state {
		case ncclSuccess:
			return true, nil
		case ncclInProgress:
			return false, nil
		}
		return false, c.fail(op, state)
	})
}

// poll calls check until it reports done or fails, or ctx ends (then the communicator is
// aborted). It spins for the first ~200 µs: enqueueing and small collectives finish in
// microseconds, and yielding a locked thread or sleeping costs more than that (a sleep on
// the GPU VMs lasts a millisecond or more). Longer waits yield for up to 20 ms, then nap
// between checks.
func (c *Comm) poll(ctx context.Context, op string, check func() (bool, error)) error {
	start := time.Now()
	for i := 0; ; i++ {
		if c.comm == nil {
			return errors.New("nccl: communicator is closed")
		}
		done, err := check()
		if err != nil || done {
			return err
		}
		if i%256 != 255 {
			continue
		}
		if err := ctx.Err(); err != nil {
			c.abort()
			return fmt.Errorf("nccl: %s did not finish: %w (communicator aborted)", op, err)
		}
		switch waited := time.Since(start); {
		case waited < 200*time.Microsecond:
		case waited < 20*time.Millisecond:
			runtime.Gosched()
		default:
			nap()
		}
	}
}

// nap pauses the polling thread for a tenth of a millisecond or so. time.Sleep cannot:
// Go's timers wake a sleeper about 1.1 ms after it asked for 50 µs (measured on the
// development VM), which on 4 × H200 added a fixed 1.2 ms to every timed run of the
// collectives sweep — 15 % of a 20-call 128 MiB all-gather — where nanosleep(2) of 10 µs
// returns after 60–90 µs. Waits under 20 ms never get here: they yield instead.
func nap() {
	ts := syscall.NsecToTimespec(10_000)
	_ = syscall.Nanosleep(&ts, nil) // EINTR only cuts the nap short
}

// enqueued is settle for a collective: one that returned ncclSuccess is enqueued and needs
// no polling (NCCL asks for it after ncclInProgress only), which keeps small collectives at
// NCCL's own launch cost. Communicator management (init, split, finalize) always settles.
func (c *Comm) enqueued(ctx context.Context, op string, r C.ncclResult_t) error {
	if r == ncclSuccess {
		return nil
	}
	return c.settle(ctx, op, r)
}

func (c *Comm) fail(op string, r C.ncclResult_t) error {
	e := &Error{Op: op, Code: Result(r), Detail: errorString(r)}
	if c.comm != nil {
		if last := C.GoString(C.moe_ncclGetLastError(c.comm)); last != "" {
			e.Detail = last
		}
	}
	c.abort()
	c.mu.Lock()
	if c.broken == nil {
		c.broken = fmt.Errorf("communicator broken by an earlier error: %w", e)
	}
	c.mu.Unlock()
	if Result(r) == 6 { // ncclRemoteError: a peer failed
		return fmt.Errorf("%w: %w", comm.ErrPeerLost, e)
	}
	return e
}

// abort stops every operation of the communicator and frees it; later calls fail.
func (c *Comm) abort() {
	if c.comm != nil {
		C.moe_ncclCommAbort(c.comm)
		c.comm = nil
	}
}

func (c *Comm) Rank() int { return c.rank }
func (c *Comm) Size() int { return c.size }

func (c *Comm) usable(bufs ...comm.Buffer) error {
	c.mu.Lock()
	err := c.broken
	c.mu.Unlock()
	if err != nil {
		return err
	}
	if c.comm == nil {
		return errors.New("nccl: communicator is closed")
	}
	for _, b := range bufs {
		if !b.OnDevice() {
			return fmt.Errorf("nccl: %v: the nccl backend needs device buffers (comm.MemoryOf gives them)", b)
		}
	}
	return nil
}

func ncclType(t dtype.DType) C.int {
	if t == dtype.BFloat16 {
		return ncclBfloat16
	}
	return ncclFloat32
}

// ptr is a device buffer's address as the trampolines take it.
func ptr(b comm.Buffer) C.uintptr_t { return C.uintptr_t(b.Ptr()) }

func (c *Comm) stream() C.cudaStream_t { return C.cudaStream_t(c.dev.stream.Handle()) }

func (c *Comm) AllGather(ctx context.Context, send, recv comm.Buffer) error {
	if err := c.usable(send, recv); err != nil {
		return err
	}
	r := C.moe_ncclAllGather(ptr(send), ptr(recv), C.size_t(send.Len()), ncclType(send.DType()), c.comm, c.stream())
	return c.enqueued(ctx, "ncclAllGather", r)
}

// AllGatherV is a group of broadcasts, one per rank with a non-empty block, each into
// that rank's place in recv (NCCL has no all-gather-v); equal blocks, as DP ranks with
// the same tokens have, are one all-gather (on 2 × H200 the group cost 2–6 µs more than
// an all-gather below 1 MiB and up to a third more at 16 MiB, with uneven blocks).
func (c *Comm) AllGatherV(ctx context.Context, send, recv comm.Buffer, counts []int) error {
	if equalCounts(counts) {
		return c.AllGather(ctx, send, recv)
	}
	if err := c.usable(send, recv); err != nil {
		return err
	}
	return c.group(ctx, "all-gather-v", func() C.ncclResult_t {
		off := 0
		for root, n := range counts {
			if n > 0 {
				dst := recv.Slice(off, n)
				if r := C.moe_ncclBroadcast(ptr(send), ptr(dst), C.size_t(n), ncclType(send.DType()), C.int(root), c.comm, c.stream()); r != ncclSuccess && r != ncclInProgress {
					return r
				}
			}
			off += n
		}
		return ncclSuccess
	})
}

func (c *Comm) ReduceScatter(ctx context.Context, send, recv comm.Buffer) error {
	if err := c.usable(send, recv); err != nil {
		return err
	}
	r := C.moe_ncclReduceScatter(ptr(send), ptr(recv), C.size_t(recv.Len()), ncclType(send.DType()), ncclSum, c.comm, c.stream())
	return c.enqueued(ctx, "ncclReduceScatter", r)
}

// ReduceScatterV is a group of reduces, one per rank with a non-empty block, each summing
// that block of every rank's send into the rank's recv; equal blocks are one
// reduce-scatter.
func (c *Comm) ReduceScatterV(ctx context.Context, send, recv comm.Buffer, counts []int) error {
	if equalCounts(counts) {
		return c.ReduceScatter(ctx, send, recv)
	}
	if err := c.usable(send, recv); err != nil {
		return err
	}
	return c.group(ctx, "reduce-scatter-v", func() C.ncclResult_t {
		off := 0
		for root, n := range counts {
			if n > 0 {
				src := send.Slice(off, n)
				if r := C.moe_ncclReduce(ptr(src), ptr(recv), C.size_t(n), ncclType(send.DType()), ncclSum, C.int(root), c.comm, c.stream()); r != ncclSuccess && r != ncclInProgress {
					return r
				}
			}
			off += n
		}
		return ncclSuccess
	})
}

// equalCounts reports whether every block of a -v collective has the same, non-zero size.
func equalCounts(counts []int) bool {
	for _, n := range counts {
		if n != counts[0] {
			return false
		}
	}
	return len(counts) > 0 && counts[0] > 0
}

// group issues calls between ncclGroupStart and ncclGroupEnd.
func (c *Comm) group(ctx context.Context, op string, calls func() C.ncclResult_t) error {
	if r := C.moe_ncclGroupStart(); r != ncclSuccess {
		return c.fail("ncclGroupStart", r)
	}
	r := calls()
	end := C.moe_ncclGroupEnd()
	if r != ncclSuccess && r != ncclInProgress {
		return c.fail(op, r)
	}
	return c.enqueued(ctx, op+" (ncclGroupEnd)", end)
}

func (c *Comm) AllReduce(ctx context.Context, send, recv comm.Buffer) error {
	if err := c.usable(send, recv); err != nil {
		return err
	}
	r := C.moe_ncclAllReduce(ptr(send), ptr(recv), C.size_t(send.Len()), ncclType(send.DType()), ncclSum, c.comm, c.stream())
	return c.enqueued(ctx, "ncclAllReduce", r)
}

func (c *Comm) Broadcast(ctx context.Context, buf comm.Buffer, root int) error {
	if err := c.usable(buf); err != nil {
		return err
	}
	r := C.moe_ncclBroadcast(ptr(buf), ptr(buf), C.size_t(buf.Len()), ncclType(buf.DType()), C.int(root), c.comm, c.stream())
	return c.enqueued(ctx, "ncclBroadcast", r)
}

// Barrier all-reduces one float and waits for it.
func (c *Comm) Barrier(ctx context.Context) error {
	if err := c.usable(); err != nil {
		return err
	}
	one := c.dev.scratch
	r := C.moe_ncclAllReduce(ptr(one), ptr(one), 1, ncclFloat32, ncclSum, c.comm, c.stream())
	if err := c.enqueued(ctx, "barrier (ncclAllReduce)", r); err != nil {
		return err
	}
	return c.Sync(ctx)
}

// Split is ncclCommSplit; the sub-communicator shares the device and its stream, and is
// blocking like its parent.
func (c *Comm) Split(ctx context.Context, color, key int) (comm.Communicator, error) {
	if err := c.usable(); err != nil {
		return nil, err
	}
	ctx, cancel := bound(ctx, c.cfg.Timeout)
	defer cancel()
	s, err := c.split(ctx, color, key, 1)
	if err != nil || s == nil {
		return nil, err // a nil *Comm must not become a non-nil interface
	}
	return s, nil
}

// split makes a sub-communicator with the given blocking mode. A blocking split cannot be
// abandoned by polling, so a watchdog aborts the parent from another thread (NCCL's way
// to unblock a stuck call) if ctx ends first.
func (c *Comm) split(ctx context.Context, color, key, blocking int) (*Comm, error) {
	if color < 0 {
		color = -1 // NCCL_SPLIT_NOCOLOR
	}
	var conf C.moe_ncclConfig
	C.moe_nccl_config_init(&conf, C.int(blocking), 1) // share the parent's connections
	var sub C.ncclComm_t
	stop := context.AfterFunc(ctx, func() { C.moe_ncclCommAbort(c.comm) })
	r := C.moe_ncclCommSplit(c.comm, C.int(color), C.int(key), &sub, &conf)
	if !stop() {
		c.comm = nil // the watchdog aborted it
		return nil, fmt.Errorf("nccl: ncclCommSplit did not finish: %w (communicator aborted)", ctx.Err())
	}
	if err := c.settle(ctx, "ncclCommSplit", r); err != nil {
		return nil, err
	}
	if sub == nil {
		return nil, nil
	}
	s := &Comm{comm: sub, dev: c.dev, cfg: c.cfg}
	if err := s.settle(ctx, "ncclCommSplit (new communicator)", ncclInProgress); err != nil {
		return nil, err
	}
	var n, me C.int
	if q := C.moe_ncclCommCount(sub, &n); q != ncclSuccess {
		return nil, s.fail("ncclCommCount", q)
	}
	if q := C.moe_ncclCommUserRank(sub, &me); q != ncclSuccess {
		return nil, s.fail("ncclCommUserRank", q)
	}
	s.rank, s.size = int(me), int(n)
	return s, nil
}

// Sync waits until every collective enqueued so far has completed, polling the stream and
// NCCL's error state so that a dead peer or a deadline ends in an abort, not a hang.
func (c *Comm) Sync(ctx context.Context) error {
	if err := c.usable(); err != nil {
		return err
	}
	ctx, cancel := bound(ctx, c.cfg.Timeout)
	defer cancel()
	return c.poll(ctx, "collectives", func() (bool, error) {
		done, err := c.dev.stream.Done()
		if err != nil || done {
			return done, err
		}
		var state C.ncclResult_t
		if q := C.moe_ncclCommGetAsyncError(c.comm, &state); q != ncclSuccess {
			return false, c.fail("ncclCommGetAsyncError", q)
		}
		if state != ncclSuccess && state != ncclInProgress {
			return false, c.fail("collective", state)
		}
		return false, nil
	})
}

// Close finalizes and destroys the communicator (aborts it if it is broken), and the
// non-blocking world it came from.
func (c *Comm) Close() error {
	c.mu.Lock()
	broken := c.broken != nil
	c.mu.Unlock()
	err := c.close()
	if c.base != nil {
		if broken {
			// A failed job: finalizing would wait for peers that may be gone.
			c.base.abort()
		} else {
			err = errors.Join(err, c.base.close())
		}
	}
	return err
}

func (c *Comm) close() error {
	if c.comm == nil {
		return nil
	}
	c.mu.Lock()
	broken := c.broken
	c.mu.Unlock()
	if broken != nil {
		c.abort()
		return nil
	}
	ctx, cancel := bound(context.Background(), c.cfg.Timeout)
	defer cancel()
	// Finalizing waits for the peers; on a blocking communicator only another thread can
	// end that wait, so a watchdog aborts it at the deadline.
	handle := c.comm
	stop := context.AfterFunc(ctx, func() { C.moe_ncclCommAbort(handle) })
	r := C.moe_ncclCommFinalize(c.comm)
	if !stop() {
		c.comm = nil
		return fmt.Errorf("nccl: ncclCommFinalize did not finish: %w (communicator aborted)", ctx.Err())
	}
	if err := c.settle(ctx, "ncclCommFinalize", r); err != nil {
		return err
	}
	r = C.moe_ncclCommDestroy(c.comm)
	c.comm = nil
	if r != ncclSuccess {
		return &Error{Op: "ncclCommDestroy", Code: Result(r), Detail: errorString(r)}
	}
	return nil
}
