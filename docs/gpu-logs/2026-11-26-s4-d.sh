#!/usr/bin/env bash
# Session 4, command D (2 GPUs): the new tensor-core rule checked and timed beside cuBLAS,
# start-up in two steps, the faults on NCCL with the launcher's words.
export NCCL_NVLS_ENABLE=0
o=$OUT/d; mkdir -p $o
T0=$(date +%s)
st() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
t() { local name=$1; shift; local s=$EPOCHREALTIME; timeout 150 "$@" >$o/$name.log 2>&1; local rc=$?; st "$name rc=$rc $(awk "BEGIN{print $EPOCHREALTIME - $s}")s"; grep -E "check|^--- FAIL|^ok|^PASS|^FAIL|rror" $o/$name.log | tail -4; }
nvidia-smi -L; git log --oneline -1 2>/dev/null
t gpuops bin/gpuops.test -test.v -test.run 'Expert|Graph|Choose'
t chk-qwen bin/launch -np 2 --dp 2 --ep bin/worker run --backend nccl --preset qwen3-30b-a3b --tokens 1,16,128,256 --check
t chk-mix-ep bin/launch -np 2 --dp 2 --ep bin/worker run --backend nccl --preset mixtral --tokens-per-rank 16,40 --check
t chk-mix-32 bin/launch -np 2 --dp 2 --ep bin/worker run --backend nccl --preset mixtral --tokens 32 --check
t chk-ds bin/launch -np 2 --dp 2 --ep bin/worker run --backend nccl --preset deepseek-v3 --tokens 128,256 --check
r() { local name=$1; shift; local e=(); while [ "$1" != -- ]; do e+=("$1"); shift; done; shift
  env "${e[@]}" timeout 120 bin/launch -np 2 --dp 2 --ep bin/worker run --backend nccl --match-ref --iters 30 --warmup 5 --json $o/$name.json "$@" > $o/$name.log 2>&1
  echo "$(st "$name rc=$?") $(python3 -c "
import json;d=json.load(open('$o/$name.json'))
print('  '.join('%d tok %.3f ms'%(r['tokens_per_dp_rank'][0],r['ms_median']) for r in d['rows']))")"; }
for rep in 1 2; do
  r mix-default-$rep X=1 -- --preset mixtral --tokens 16,32
  r mix-cublas-$rep MOERUN_EXPERT_GEMM=cublas -- --preset mixtral --tokens 16,32
  r qwen-default-$rep X=1 -- --preset qwen3-30b-a3b --tokens 64,128,256
  r qwen-cublas-$rep MOERUN_EXPERT_GEMM=cublas -- --preset qwen3-30b-a3b --tokens 64,128,256
  r ds-default-$rep X=1 -- --preset deepseek-v3 --tokens 256
  r ds-cublas-$rep MOERUN_EXPERT_GEMM=cublas -- --preset deepseek-v3 --tokens 256
done
st startup
bin/launch -np 2 bin/worker --backend nccl collectives -b 8K -e 8K --ops all_reduce -n 1 -w 0 >/dev/null 2>&1
for rep in 1 2 3 4 5; do
  s=$(date +%s.%N)
  bin/launch -np 2 bin/worker --backend nccl --log-level info collectives -b 8K -e 8K --ops all_reduce -d bf16 -n 1 -w 0 --json $o/su-$rep.json >$o/su-$rep.log 2>&1
  python3 -c "import json;d=json.load(open('$o/su-$rep.json'))[0];print('startup $rep: communicators %.3f s, first collective %.3f s'%(d['comms_ready_unix_s']-$s,d['ready_unix_s']-$s))"
done
grep "job ready" $o/su-5.log
st faults; BACKEND=nccl SETTLE_S=12 timeout 200 bench/faults.sh 2 > $o/faults.md 2>$o/faults.err; echo "faults rc=$?"
cat $o/faults.err; cat $o/faults.md
nvidia-smi --query-compute-apps=pid,name --format=csv
st done
cd $OUT && tar czf d.tgz d
