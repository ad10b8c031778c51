#!/usr/bin/env bash
# Session 4, command F (2 GPUs): -v collectives with equal blocks as the plain collective
# (bin/worker) beside the previous commit (bin/worker.prev), same machine, interleaved;
# the conformance suite and a --check with equal tokens.
export NCCL_NVLS_ENABLE=0
o=$OUT/f; mkdir -p $o
T0=$(date +%s)
st() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
nvidia-smi -L
timeout 120 bin/nccl.test -test.v > $o/nccl.log 2>&1; st "nccl.test rc=$?"; grep -E "^(--- |ok|PASS|FAIL)" $o/nccl.log | tail -4
timeout 120 bin/launch -np 2 --dp 2 --ep bin/worker run --backend nccl --preset qwen3-30b-a3b --tokens 1,16,128 --check > $o/chk.log 2>&1; st "check rc=$?"; grep check $o/chk.log | tail -1
r() { local name=$1 w=$2; shift 2
  timeout 120 bin/launch -np 2 --dp 2 --ep $w run --backend nccl --match-ref --iters 30 --warmup 5 --json $o/$name.json "$@" > $o/$name.log 2>&1
  echo "$(st "$name rc=$?") $(python3 -c "
import json;d=json.load(open('$o/$name.json'))
print('  '.join('%d tok %.3f ms'%(r['tokens_per_dp_rank'][0],r['ms_median']) for r in d['rows']))")"; }
for rep in 1 2; do
  for p in mixtral qwen3-30b-a3b deepseek-v3; do
    r $p-prev-$rep bin/worker.prev --preset $p --tokens 1,16,128
    r $p-new-$rep bin/worker --preset $p --tokens 1,16,128
  done
done
cd $OUT && tar czf f.tgz f
