// Package rendezvous owns the job's key-value store, a small TCP server like torch's
// TCPStore: the launcher runs the Server, and workers use a Client to publish and wait for
// addresses, NCCL unique ids and counters. Every connection must first present the job's
// token. The package also names the environment through which a launcher tells a worker who
// it is and where the store is. It knows nothing of ranks' roles or of collectives.
package rendezvous
