package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/moerun/moerun/comm"
	"github.com/moerun/moerun/rank"
	"github.com/moerun/moerun/rendezvous"
)

// Job is a worker's membership in a running job: the store, the world communicator and
// one communicator per group of the rank grid.
type Job struct {
	Place   Place
	Backend string
	Store   *rendezvous.Client
	World   comm.Communicator
	groups  map[rank.GroupKind]comm.Communicator
	server  *rendezvous.Server // the store this process serves (rank 0 under mpirun/Slurm, or alone)
	// CommsReadyUnix is when the last rank had every communicator set up (Unix seconds,
	// rank 0's view: each rank publishes its time in the store; a rank's own time without
	// a store). ReadyUnix is when a first collective over the world, a barrier, had
	// completed after that: NCCL connects peers lazily, in the first collective that
	// needs them, so this is the point a torchrun job reaches with its first all-reduce.
	CommsReadyUnix, ReadyUnix float64

	progress *tracker   // every collective of World and the groups counts here
	beat     *heartbeat // publishes progress to the store; nil when nobody watches
}

// JoinOption is an optional knob of Join.
type JoinOption func(*joinOptions)

type joinOptions struct {
	heartbeat  time.Duration
	hangBefore uint64
	exitBefore uint64
	exitCode   int
}

// WithHeartbeat makes the rank publish its progress (package progress) to the store every
// period, from the moment it reaches the store until Close: the launcher asks for it
// (MOERUN_HEARTBEAT) to find hung ranks.
func WithHeartbeat(period time.Duration) JoinOption {
	return func(o *joinOptions) { o.heartbeat = period }
}

// withExitBefore is the MOERUN_TEST_EXIT hook: exit with code before collective #seq.
func withExitBefore(seq uint64, code int) JoinOption {
	return func(o *joinOptions) { o.exitBefore, o.exitCode = seq, code }
}

// withHangBefore is the MOERUN_TEST_HANG hook: block before collective #seq.
func withHangBefore(seq uint64) JoinOption {
	return func(o *joinOptions) { o.hangBefore = seq }
}

// Join connects to the job's store (serving it first when this rank must), opens the world
// communicator of the named backend and splits it into the TP, PCP, PP, DP and EP groups
// of the layout. It is collective: every rank of the job calls it. Every collective of the
// job's communicators, and their set-up, counts on the rank's progress (worker/progress.go).
func Join(ctx context.Context, p Place, backend string, logger *slog.Logger, opts ...JoinOption) (_ *Job, err error) {
	if logger == nil {
		logger = slog.Default()
	}
	var o joinOptions
	for _, opt := range opts {
		opt(&o)
	}
	j := &Job{Place: p, Backend: backend, groups: map[rank.GroupKind]comm.Communicator{},
		progress: &tracker{watched: o.heartbeat > 0, hangBefore: o.hangBefore, hangUntil: ctx.Done(),
			exitBefore: o.exitBefore, exitCode: o.exitCode}}
	defer func() {
		if err != nil {
			j.Close()
		}
	}()
	start := time.Now()
	if err := j.connectStore(ctx, logger); err != nil {
		return nil, err
	}
	if o.heartbeat > 0 {
		if err := j.startHeartbeat(ctx, o.heartbeat, logger); err != nil {
			return nil, err
		}
	}
	logger.Info("store connected", "rank", p.Rank, "took", time.Since(start))
	host, err := AdvertiseHost(j.Place.StoreAddr)
	if err != nil {
		return nil, err
	}
	wctx, cancel := context.WithTimeout(ctx, p.Timeout)
	defer cancel()
	tok, err := j.progress.enter(wctx, opOpen, groupWorld)
	if err != nil {
		return nil, err
	}
	world, err := comm.Open(wctx, backend, comm.Config{
		Rank: p.Rank, Size: p.World, Store: j.Store, Namespace: "moerun",
		Host: host, Timeout: p.Timeout, Logger: logger, Device: p.Device, Token: p.Token,
	})
	if err = j.progress.leaveDone(tok, err); err != nil {
		return nil, err
	}
	j.progress.async = comm.MemoryOf(world) != nil // device memory: NCCL's collectives are enqueued
	j.World = j.progress.wrap(world, groupWorld)
	logger.Info("world communicator ready", "rank", p.Rank, "backend", backend, "since start", time.Since(start))
	for _, kind := range rank.AllGroupKinds {
		t := time.Now()
		if isWorld(p.Layout.Groups(kind), p.World) {
			// The same ranks in the same order: the world itself serves (every rank
			// decides alike, so no rank waits in a split the others skip).
			j.groups[kind] = j.progress.wrap(comm.Alias(world), groupOf(kind))
			continue
		}
		if singletons(p.Layout.Groups(kind)) {
			// Every rank alone (every rank decides alike, as above): no split.
			j.groups[kind] = j.progress.wrap(comm.Self(world), groupOf(kind))
			continue
		}
		color, key := p.Layout.GroupOf(kind, p.Rank)
		g, err := j.World.Split(wctx, color, key)
		if err != nil {
			return nil, fmt.Errorf("build the %v group: %w", kind, err)
		}
		j.groups[kind] = j.progress.wrap(g, groupOf(kind))
		logger.Info("group communicator ready", "rank", p.Rank, "group", kind, "size", g.Size(), "took", time.Since(t))
	}
	commsReady := time.Now()
	j.CommsReadyUnix = unixSeconds(commsReady)
	if j.Store != nil {
		if err := j.Store.Set(wctx, commsReadyKey(p.Rank), []byte(strconv.FormatFloat(j.CommsReadyUnix, 'f', -1, 64))); err != nil {
			return nil, fmt.Errorf("publish the start-up time: %w", err)
		}
	}
	// Ready once every rank is and a collective has gone through: the start-up time users
	// compare with torchrun's.
	if err := j.World.Barrier(wctx); err != nil {
		return nil, fmt.Errorf("barrier after joining: %w", err)
	}
	j.ReadyUnix = unixSeconds(time.Now())
	if j.Store != nil && p.Rank == 0 {
		for r := 1; r < p.World; r++ { // all set before the barrier
			v, ok, err := j.Store.Get(wctx, commsReadyKey(r))
			if err != nil {
				return nil, fmt.Errorf("read rank %d's start-up time: %w", r, err)
			}
			if t, perr := strconv.ParseFloat(string(v), 64); ok && perr == nil {
				j.CommsReadyUnix = max(j.CommsReadyUnix, t)
			}
		}
	}
	logger.Info("job ready", "rank", p.Rank, "communicators", commsReady.Sub(start), "first collective", time.Since(commsReady))
	return j, nil
}

func unixSeconds(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }

// commsReadyKey is where rank r publishes when its communicators were set up.
func commsReadyKey(r int) string { return "moerun/comms-ready/" + strconv.Itoa(r) }

// isWorld reports whether groups is one group of every rank in rank order.
func isWorld(groups [][]int, world int) bool {
	if len(groups) != 1 || len(groups[0]) != world {
		return false
	}
	for i, r := range groups[0] {
		if r != i {
			return false
		}
	}
	return true
}

// Synced tells the job's progress that the device has completed every collective enqueued
// so far (after a successful device synchronisation outside the communicators).
func (j *Job) Synced() { j.progress.synced() }

// singletons reports whether every group has one rank.
func singletons(groups [][]int) bool {
	for _, g := range groups {
		if len(g) != 1 {
			return false
		}
	}
	return len(groups) > 0
}

func (j *Job) connectStore(ctx context.Context, logger *slog.Logger) error {
	p := &j.Place
	if p.StoreAddr == "" || (p.HostStore && p.Rank == 0) {
		listen := p.StoreAddr
		if listen == "" {
			// A lone worker serves a private store on loopback with a fresh token.
			token, err := rendezvous.NewToken()
			if err != nil {
				return err
			}
			p.Token, listen = token, "127.0.0.1:0"
		}
		ln, err := net.Listen("tcp", listen)
		if err != nil {
			return fmt.Errorf("rank 0: serve the rendezvous store on %s: %w", listen, err)
		}
		p.StoreAddr = ln.Addr().String()
		j.server = rendezvous.NewServer(p.Token, logger)
		go j.server.Serve(ln)
	}
	sctx, cancel := context.WithTimeout(ctx, p.Timeout)
	defer cancel()
	store, err := rendezvous.Dial(sctx, p.StoreAddr, p.Token)
	if err != nil {
		return fmt.Errorf("rank %d: connect to the rendezvous store at %s: %w", p.Rank, p.StoreAddr, err)
	}
	j.Store = store
	return nil
}

// startHeartbeat dials a store connection for the heartbeat and starts it.
func (j *Job) startHeartbeat(ctx context.Context, period time.Duration, logger *slog.Logger) error {
	sctx, cancel := context.WithTimeout(ctx, j.Place.Timeout)
	defer cancel()
	c, err := rendezvous.Dial(sctx, j.Place.StoreAddr, j.Place.Token)
	if err != nil {
		return fmt.Errorf("rank %d: connect the heartbeat to the rendezvous store at %s: %w", j.Place.Rank, j.Place.StoreAddr, err)
	}
	j.beat = startHeartbeat(c, j.Place.Rank, period, j.progress, logger)
	return nil
}

// Group is this rank's communicator of the given kind.
func (j *Job) Group(k rank.GroupKind) comm.Communicator { return j.groups[k] }

// Close releases the communicators and the store connection. When rank 0 serves the store
// (mpirun, Slurm) every rank meets at a final barrier first, so that rank 0 does not take
// the store away from a rank that still needs it.
func (j *Job) Close() error {
	var errs []error
	if j.Place.HostStore && j.World != nil && j.World.Size() > 1 {
		ctx, cancel := context.WithTimeout(context.Background(), j.Place.Timeout)
		errs = append(errs, j.World.Barrier(ctx))
		cancel()
	}
	// Every rank closes in the same order (the reverse of creation): closing a GPU
	// communicator waits for its peers, and two ranks closing different ones would wait
	// for each other.
	for i := len(rank.AllGroupKinds) - 1; i >= 0; i-- {
		if g := j.groups[rank.AllGroupKinds[i]]; g != nil {
			errs = append(errs, g.Close())
		}
	}
	if j.World != nil {
		errs = append(errs, j.World.Close())
	}
	if j.beat != nil {
		j.beat.Close() // a last record, marked closed, while the store is still there
		j.beat = nil
	}
	if j.Store != nil {
		errs = append(errs, j.Store.Close())
	}
	if j.server != nil {
		errs = append(errs, j.server.Close())
	}
	return errors.Join(errs...)
}
