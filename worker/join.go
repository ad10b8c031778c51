package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
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
	// ReadyUnix is when every communicator of every rank was ready (Unix seconds).
	ReadyUnix float64
}

// Join connects to the job's store (serving it first when this rank must), opens the world
// communicator of the named backend and splits it into the TP, PCP, PP, DP and EP groups
// of the layout. It is collective: every rank of the job calls it.
func Join(ctx context.Context, p Place, backend string, logger *slog.Logger) (_ *Job, err error) {
	if logger == nil {
		logger = slog.Default()
	}
	j := &Job{Place: p, Backend: backend, groups: map[rank.GroupKind]comm.Communicator{}}
	defer func() {
		if err != nil {
			j.Close()
		}
	}()
	start := time.Now()
	if err := j.connectStore(ctx, logger); err != nil {
		return nil, err
	}
	host, err := AdvertiseHost(j.Place.StoreAddr)
	if err != nil {
		return nil, err
	}
	wctx, cancel := context.WithTimeout(ctx, p.Timeout)
	defer cancel()
	j.World, err = comm.Open(wctx, backend, comm.Config{
		Rank: p.Rank, Size: p.World, Store: j.Store, Namespace: "moerun",
		Host: host, Timeout: p.Timeout, Logger: logger, Device: p.Device,
	})
	if err != nil {
		return nil, err
	}
	logger.Info("world communicator ready", "rank", p.Rank, "backend", backend, "since start", time.Since(start))
	for _, kind := range rank.AllGroupKinds {
		t := time.Now()
		if isWorld(p.Layout.Groups(kind), p.World) {
			// The same ranks in the same order: the world itself serves (every rank
			// decides alike, so no rank waits in a split the others skip).
			j.groups[kind] = comm.Alias(j.World)
			continue
		}
		color, key := p.Layout.GroupOf(kind, p.Rank)
		g, err := j.World.Split(wctx, color, key)
		if err != nil {
			return nil, fmt.Errorf("build the %v group: %w", kind, err)
		}
		j.groups[kind] = g
		logger.Info("group communicator ready", "rank", p.Rank, "group", kind, "size", g.Size(), "took", time.Since(t))
	}
	// Ready once every rank is: the start-up time users compare with torchrun's.
	if err := j.World.Barrier(wctx); err != nil {
		return nil, fmt.Errorf("barrier after joining: %w", err)
	}
	j.ReadyUnix = float64(time.Now().UnixNano()) / 1e9
	return j, nil
}

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
	if j.Store != nil {
		errs = append(errs, j.Store.Close())
	}
	if j.server != nil {
		errs = append(errs, j.server.Close())
	}
	return errors.Join(errs...)
}
