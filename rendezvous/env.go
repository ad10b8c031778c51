package rendezvous

// Environment variables the launcher sets for every worker. The first six are torchrun's
// names, so a worker reads the same variables whoever started it.
const (
	EnvRank           = "RANK"             // this worker's global rank, 0 ≤ RANK < WORLD_SIZE
	EnvWorldSize      = "WORLD_SIZE"       // number of ranks in the job
	EnvLocalRank      = "LOCAL_RANK"       // rank among the workers of this host
	EnvLocalWorldSize = "LOCAL_WORLD_SIZE" // number of workers on this host
	EnvMasterAddr     = "MASTER_ADDR"      // host of the rendezvous store
	EnvMasterPort     = "MASTER_PORT"      // TCP port of the rendezvous store

	EnvToken = "MOERUN_TOKEN" // the job's store token (NewToken); never print it

	EnvTP  = "MOERUN_TP"  // tensor-parallel size
	EnvDP  = "MOERUN_DP"  // data-parallel size (derived by the launcher when not given)
	EnvPCP = "MOERUN_PCP" // prefill context-parallel size
	EnvPP  = "MOERUN_PP"  // pipeline-parallel size
	EnvEP  = "MOERUN_EP"  // "1" when expert parallelism is on, else "0"

	// EnvTimeout bounds any single wait for a peer (Go duration syntax, e.g. "2m0s").
	EnvTimeout = "MOERUN_TIMEOUT"

	// EnvNCCLNVLS is NCCL's NVLink SHARP switch. The launcher sets it to "0" unless the
	// user's environment already sets it (ARCHITECTURE.md, hard-won facts).
	EnvNCCLNVLS = "NCCL_NVLS_ENABLE"
)
