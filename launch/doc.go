// Package launch owns the MPI-style launcher: it parses the command line, checks the rank
// layout, runs the job's rendezvous store, spawns one process per rank with its environment,
// tags every output line with the rank, and supervises the ranks so that the job fails whole
// and fast and says which rank failed first. It must not import moe or cuda.
//
// The pieces: Parse and Main (cli.go) read the command line; workerEnv (env.go) builds a
// rank's environment; pump (output.go) tags output lines; the supervisor (supervisor.go) is
// a pure state machine deciding what to do when ranks exit or the launcher is signalled;
// Run (run.go) is the one loop that owns processes, signals and timers around it.
package launch
