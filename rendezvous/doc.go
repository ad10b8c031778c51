// Package rendezvous owns the job's key-value store, a small TCP server like torch's
// TCPStore: the launcher runs the Server, and workers use a Client to publish and wait for
// addresses, NCCL unique ids and counters. On every connection the store and the client
// first prove to each other that they hold the job's token, without sending it (auth.go;
// the tcp backend's ring connections use the same proof). The store bounds what any client
// can make it hold (the limits in server.go). The package also names the environment through
// which a launcher tells a worker who it is and where the store is. It knows nothing of
// ranks' roles or of collectives.
package rendezvous
