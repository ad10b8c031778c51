// Package worker owns a worker process's side of a job: where it stands (its rank, the
// world, the layout and the store, read from the launcher's environment, Slurm's or
// mpirun's, or flags), joining the job (store, world communicator, every group of the rank
// grid), and the command line of bin/worker with its jobs.
package worker

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/moerun/moerun/rank"
	"github.com/moerun/moerun/rendezvous"
)

// Place is where this worker stands in its job.
type Place struct {
	Rank, World           int
	LocalRank, LocalWorld int
	// StoreAddr is the rendezvous store's host:port; empty for a lone worker (world 1),
	// which serves a store to itself.
	StoreAddr string
	Token     string
	// HostStore is set when rank 0 must serve the store itself: under mpirun or Slurm no
	// launcher runs one.
	HostStore bool
	Layout    rank.Layout
	Timeout   time.Duration
	// Source names who started the worker: "launch", "mpirun", "slurm", "pmi" or "alone".
	Source string
	// Device is the GPU of this rank (LOCAL_RANK modulo the visible GPUs), -1 for none.
	Device int
}

// DefaultTimeout bounds a single wait for a peer when the environment does not say.
const DefaultTimeout = 120 * time.Second

// DefaultStorePort is the store port that rank 0 serves under mpirun or Slurm when
// MASTER_PORT is not set (torch's default).
const DefaultStorePort = "29500"

// Where the rank variables of each starter live, in the order they are tried.
var starters = []struct {
	source                           string
	rank, world, localRank, localWld string
}{
	{"launch", rendezvous.EnvRank, rendezvous.EnvWorldSize, rendezvous.EnvLocalRank, rendezvous.EnvLocalWorldSize},
	{"mpirun", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE"},
	{"pmi", "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID", "MPI_LOCALNRANKS"},
	{"slurm", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "SLURM_NTASKS_PER_NODE"},
}

// PlaceFromEnv reads the worker's place from the environment (getenv is os.Getenv in
// production). The layout comes from MOERUN_TP/DP/PCP/PP/EP, with tp = pcp = pp = 1 and
// dp derived when absent. Every error names the variable and what was expected.
func PlaceFromEnv(getenv func(string) string) (Place, error) {
	p := Place{Source: "alone", World: 1, LocalWorld: 1, Timeout: DefaultTimeout}
	for _, s := range starters {
		if getenv(s.rank) == "" && getenv(s.world) == "" {
			continue
		}
		p.Source = s.source
		var err error
		if p.Rank, err = intVar(getenv, s.rank, -1, 0); err != nil {
			return p, err
		}
		if p.World, err = intVar(getenv, s.world, -1, 1); err != nil {
			return p, err
		}
		if p.Rank >= p.World {
			return p, fmt.Errorf("%s=%d is not below %s=%d", s.rank, p.Rank, s.world, p.World)
		}
		if p.LocalRank, err = intVar(getenv, s.localRank, p.Rank, 0); err != nil {
			return p, err
		}
		if p.LocalWorld, err = localWorld(getenv, s.localWld, p.World); err != nil {
			return p, err
		}
		break
	}

	addr, port := getenv(rendezvous.EnvMasterAddr), getenv(rendezvous.EnvMasterPort)
	switch p.Source {
	case "alone":
	case "launch":
		if addr == "" || port == "" {
			return p, fmt.Errorf("%s and %s must name the rendezvous store (set by bin/launch)", rendezvous.EnvMasterAddr, rendezvous.EnvMasterPort)
		}
	default:
		p.HostStore = true
		if addr == "" {
			if p.LocalWorld != p.World {
				return p, fmt.Errorf("%s is not set: under %s on several hosts, export the address of rank 0's host", rendezvous.EnvMasterAddr, p.Source)
			}
			addr = "127.0.0.1"
		}
		if port == "" {
			port = DefaultStorePort
		}
	}
	if p.Source != "alone" {
		if _, err := strconv.ParseUint(port, 10, 16); err != nil {
			return p, fmt.Errorf("%s=%q: expected a TCP port number", rendezvous.EnvMasterPort, port)
		}
		p.StoreAddr = net.JoinHostPort(addr, port)
		p.Token = getenv(rendezvous.EnvToken)
		if p.Token == "" {
			return p, fmt.Errorf("%s is not set: every rank needs the job's store token (bin/launch sets it; under %s export the same random value to every rank)", rendezvous.EnvToken, p.Source)
		}
	}

	if t := getenv(rendezvous.EnvTimeout); t != "" {
		d, err := time.ParseDuration(t)
		if err != nil || d <= 0 {
			return p, fmt.Errorf("%s=%q: expected a positive duration such as 120s", rendezvous.EnvTimeout, t)
		}
		p.Timeout = d
	}

	sizes := map[string]int{}
	for _, v := range []string{rendezvous.EnvTP, rendezvous.EnvPCP, rendezvous.EnvPP, rendezvous.EnvDP} {
		def := 1
		if v == rendezvous.EnvDP {
			def = 0 // derived
		}
		n, err := intVar(getenv, v, def, 1)
		if err != nil {
			return p, err
		}
		sizes[v] = n
	}
	ep := false
	switch e := getenv(rendezvous.EnvEP); e {
	case "", "0", "false":
	case "1", "true":
		ep = true
	default:
		return p, fmt.Errorf("%s=%q: expected 1 or 0", rendezvous.EnvEP, e)
	}
	l, err := rank.NewLayout(p.World, sizes[rendezvous.EnvTP], sizes[rendezvous.EnvPCP], sizes[rendezvous.EnvPP], sizes[rendezvous.EnvDP], ep)
	if err != nil {
		return p, fmt.Errorf("layout from the environment: %w", err)
	}
	p.Layout = l
	return p, nil
}

// intVar reads an integer variable that must be at least min; def is used when it is unset
// (def < 0 means the variable is required).
func intVar(getenv func(string) string, name string, def, min int) (int, error) {
	s := getenv(name)
	if s == "" {
		if def < 0 {
			return 0, fmt.Errorf("%s is not set", name)
		}
		return def, nil
	}
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil || n < min {
		return 0, fmt.Errorf("%s=%q: expected an integer of at least %d", name, s, min)
	}
	return n, nil
}

// localWorld reads the number of workers on this host. Slurm spells it "4" or, through
// SLURM_TASKS_PER_NODE, "4(x2)"; when nothing says, the whole world is on one host.
func localWorld(getenv func(string) string, name string, world int) (int, error) {
	s := getenv(name)
	if s == "" && name == "SLURM_NTASKS_PER_NODE" {
		s, _, _ = strings.Cut(getenv("SLURM_TASKS_PER_NODE"), "(")
		s, _, _ = strings.Cut(s, ",")
	}
	if s == "" {
		return world, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > world {
		return 0, fmt.Errorf("%s=%q: expected a number of workers between 1 and %d", name, s, world)
	}
	return n, nil
}

// AdvertiseHost is the address this worker's backends listen on: MOERUN_HOST if set, the
// loopback address when the store is local, else the local address of the interface that
// routes to the store (found without sending anything).
func AdvertiseHost(storeAddr string) (string, error) {
	if h := os.Getenv("MOERUN_HOST"); h != "" {
		return h, nil
	}
	host, _, err := net.SplitHostPort(storeAddr)
	if err != nil || storeAddr == "" {
		return "127.0.0.1", nil
	}
	if ip := net.ParseIP(host); host == "localhost" || (ip != nil && ip.IsLoopback()) {
		return "127.0.0.1", nil
	}
	conn, err := net.Dial("udp", storeAddr)
	if err != nil {
		return "", fmt.Errorf("find the interface that reaches the store at %s: %w (set MOERUN_HOST)", storeAddr, err)
	}
	defer conn.Close()
	return conn.LocalAddr().(*net.UDPAddr).IP.String(), nil
}
