#!/usr/bin/env bash
# Session 5, command C (4 GPUs): where np-4 start-up goes (discovery, spawn, device, NCCL),
# and deepseek-v3 at EP = DP = 4 with each expert GEMM (tensor-core kernel vs cuBLAS).
export NCCL_NVLS_ENABLE=0
mkdir -p $OUT/c
exec > >(tee $OUT/c/c.log) 2>&1
echo "commit 3fe26fd"; date -u
nvidia-smi -q | grep -i -m2 "persistence"
t() { local s=$(date +%s.%N); "$@" >/dev/null 2>&1; echo "$(awk -v a=$s -v b=$(date +%s.%N) 'BEGIN{printf "%.3f", b-a}') s: $*"; }
for i in 1 2 3; do t bin/launch --show-topology; done
bin/launch --show-topology --json > $OUT/c/topo.json
for i in 1 2 3; do
  t bin/launch -np 4 /bin/true
  t bin/launch -np 4 --bind none /bin/true
  t bin/launch -np 4 --topology-file $OUT/c/topo.json /bin/true
done
su() {
  local s=$(date +%s.%N)
  bin/launch -np 4 "$@" bin/worker --backend nccl --log-level info collectives -b 8K -e 8K --ops all_reduce -n 1 -w 0 --json $OUT/c/su.json > $OUT/c/su-$i-$#.log 2>&1
  python3 -c "import json,sys; d=json.load(open('$OUT/c/su.json'))[0]; s=float(sys.argv[1]); print('startup %s: comms %.3f first %.3f' % (sys.argv[2], d['comms_ready_unix_s']-s, d['ready_unix_s']-s))" $s "$*"
}
for i in 1 2 3; do su; su --bind none; su --topology-file $OUT/c/topo.json; done
grep -h "connected\|communicator ready\|job ready" $OUT/c/su-3-0.log
for g in "" cublas mma; do
  echo "== MOERUN_EXPERT_GEMM=$g"
  MOERUN_EXPERT_GEMM=$g timeout 120 bin/launch -np 4 --dp 4 --ep bin/worker --backend nccl run --preset deepseek-v3 --match-ref --tokens 16,64,128,256 --iters 20 --warmup 3 --phases 2>&1 | grep -v "^\[[123]\]" | tail -14
done
cd $OUT && tar czf c.tgz c
