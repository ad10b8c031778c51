// Package launch owns the MPI-style launcher: it parses the command line, checks the rank
// layout, runs the job's rendezvous store, spawns one process per rank with its environment,
// tags every output line with the rank, and supervises the ranks so that the job fails whole
// and fast and says which rank failed first. It must not import moe or cuda.
//
// The pieces: Parse and Main (cli.go) read the command line; placeJob and place (bind.go)
// give every rank its GPU and CPUs from the topology (this machine's, discovered, or a
// file's), the GPU order by TP group coming from gpuOrder (gpuorder.go), and Run binds a
// rank by setting the CPU affinity of its own locked thread around the fork (affinity.go);
// workerEnv (env.go) builds a rank's environment; pump (output.go) tags output lines and keeps each rank's last ones;
// the supervisor (supervisor.go) is a pure state machine deciding what to do when ranks exit,
// the job hangs or the launcher is signalled; the watch (watch.go), pure too, judges from the
// progress records the workers publish to the store (package worker/progress) whether the
// job hangs, and says who waits where; Run (run.go) is the one loop that owns processes,
// signals, timers and the store's poller around them.
//
// What the user sees, fault by fault:
//   - a rank exits non-zero or dies of a signal: launch names it first (status or signal,
//     pid, host), repeats its last output lines, gives the state of every other rank, stops
//     the others (SIGTERM, SIGKILL after --grace) and exits with its status (128+n for
//     signal n);
//   - no rank makes progress for --timeout while some wait in a collective, or a rank sends
//     no heartbeat for --timeout (stopped, frozen): launch says which ranks wait in which
//     collective (sequence number, name, group) and which never entered it or are silent,
//     stops the job and exits 124;
//   - SIGINT or SIGTERM to launch: every rank gets SIGTERM (whatever the signal: it is what
//     workers, Python's included, treat as "stop cleanly"; a stopped rank also gets SIGCONT
//     to act on it), then SIGKILL after --grace; a second SIGINT or SIGTERM kills at once;
//     launch exits 128+n (130, 143) unless a rank failed first;
//   - launch itself killed: every rank gets SIGKILL from the kernel (Pdeathsig).
package launch
