#!/usr/bin/env bash
# Session 4, command G (2 GPUs): three chunks of weights in flight (MOERUN_MMA_VARIANT=d3)
# beside two (the default), decode rows of every preset, interleaved; the kernel tests.
export NCCL_NVLS_ENABLE=0
o=$OUT/g; mkdir -p $o
T0=$(date +%s)
st() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
nvidia-smi -L
timeout 120 bin/gpuops.test -test.v -test.run 'Expert|Graph|Choose' > $o/gpuops.log 2>&1; st "gpuops rc=$?"; grep -E "^(--- |ok|PASS|FAIL)" $o/gpuops.log | tail -6
r() { local name=$1; shift; local e=(); while [ "$1" != -- ]; do e+=("$1"); shift; done; shift
  env "${e[@]}" timeout 120 bin/launch -np 2 --dp 2 --ep bin/worker run --backend nccl --match-ref --iters 30 --warmup 5 --json $o/$name.json "$@" > $o/$name.log 2>&1
  echo "$(st "$name rc=$?") $(python3 -c "
import json;d=json.load(open('$o/$name.json'))
print('  '.join('%d tok %.3f ms'%(r['tokens_per_dp_rank'][0],r['ms_median']) for r in d['rows']))")"; }
for rep in 1 2; do
  for p in deepseek-v3 mixtral qwen3-30b-a3b; do
    r $p-default-$rep X=1 -- --preset $p --tokens 1,16,128
    r $p-d3-$rep MOERUN_MMA_VARIANT=d3 -- --preset $p --tokens 1,16,128
  done
done
MOERUN_MMA_VARIANT=d3 timeout 120 bin/launch -np 2 --dp 2 --ep bin/worker run --backend nccl --preset deepseek-v3 --tokens 16,128 --check > $o/chk.log 2>&1; st "check d3 rc=$?"; grep check $o/chk.log | tail -1
cd $OUT && tar czf g.tgz g
