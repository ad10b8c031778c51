package launch

import (
	"strconv"
	"strings"
	"time"

	"github.com/moerun/moerun/rank"
	rv "github.com/moerun/moerun/rendezvous"
	"github.com/moerun/moerun/worker/progress"
)

// jobEnv is what every rank of a job is told, apart from its rank.
type jobEnv struct {
	layout      rank.Layout
	storeHost   string
	storePort   int
	token       string
	peerTimeout time.Duration
	heartbeat   time.Duration // the workers' progress period (progress.EnvHeartbeat); 0: none asked
	// gpus is CUDA_VISIBLE_DEVICES, the job's GPUs by local rank (placement.visible); ""
	// leaves CUDA's variables as the launcher has them.
	gpus string
}

// workerEnv returns base (the launcher's environment) with the variables of rank r set,
// replacing any inherited value. NCCL_NVLS_ENABLE is set to 0 only when base does not set
// it, so a user can still turn NVLink SHARP on deliberately. When the job's GPUs are known,
// CUDA_VISIBLE_DEVICES lists them by local rank and CUDA_DEVICE_ORDER is PCI_BUS_ID, the
// numbering of that list; LOCAL_RANK stays the rank's place on the host.
func workerEnv(base []string, j jobEnv, r int) []string {
	l := j.layout
	world := l.World()
	ep := "0"
	if l.EP {
		ep = "1"
	}
	set := [][2]string{
		{rv.EnvRank, strconv.Itoa(r)},
		{rv.EnvWorldSize, strconv.Itoa(world)},
		{rv.EnvLocalRank, strconv.Itoa(r)}, // one host: local and global ranks agree
		{rv.EnvLocalWorldSize, strconv.Itoa(world)},
		{rv.EnvMasterAddr, j.storeHost},
		{rv.EnvMasterPort, strconv.Itoa(j.storePort)},
		{rv.EnvToken, j.token},
		{rv.EnvTP, strconv.Itoa(l.TP)},
		{rv.EnvDP, strconv.Itoa(l.DP)},
		{rv.EnvPCP, strconv.Itoa(l.PCP)},
		{rv.EnvPP, strconv.Itoa(l.PP)},
		{rv.EnvEP, ep},
		{rv.EnvTimeout, j.peerTimeout.String()},
	}
	if j.heartbeat > 0 {
		set = append(set, [2]string{progress.EnvHeartbeat, j.heartbeat.String()})
	}
	if j.gpus != "" {
		set = append(set, [2]string{envCUDAVisible, j.gpus}, [2]string{envCUDAOrder, "PCI_BUS_ID"})
	}
	ours := make(map[string]bool, len(set))
	for _, kv := range set {
		ours[kv[0]] = true
	}
	env := make([]string, 0, len(base)+len(set)+1)
	nvls := false
	for _, kv := range base {
		k, _, _ := strings.Cut(kv, "=")
		if ours[k] {
			continue
		}
		nvls = nvls || k == rv.EnvNCCLNVLS
		env = append(env, kv)
	}
	for _, kv := range set {
		env = append(env, kv[0]+"="+kv[1])
	}
	if !nvls {
		env = append(env, rv.EnvNCCLNVLS+"=0")
	}
	return env
}
