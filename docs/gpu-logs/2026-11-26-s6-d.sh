#!/usr/bin/env bash
# Session 6, command D (4 GPUs, commit in .gpu/commit: device plans for the tensor-core
# kernel at the layer's mean rows): gpuops tests; at NP=4, 16/128/256 tokens per rank,
# the plan read back (MOERUN_EXPERT_PLAN=host: before) against the new default, with
# --check; then make bench-gpu at NP=4.
export NCCL_NVLS_ENABLE=0
echo "commit $(cat .gpu/commit)"; date -u
mkdir -p $OUT/d
echo "## gpuops.test"; timeout 150 bin/gpuops.test -test.v 2>&1 | grep -E "^(--- |ok|PASS|FAIL|panic)" | tr '\n' ' '; echo
for p in deepseek-v3 qwen3-30b-a3b mixtral; do
  for v in host default; do
    e=""; [ $v = host ] && e="MOERUN_EXPERT_PLAN=host"
    log=$OUT/d/$p-$v.log
    env $e timeout 90 bin/launch -np 4 --dp 4 --ep bin/worker --backend nccl run --preset $p --match-ref --iters 20 --warmup 3 --tokens 16,128,256 --phases --check --json $OUT/d/$p-$v.json > $log 2>&1
    echo "$p $v rc=$? :: $(grep -E '^(\[0\])? +[0-9]|check|rror' $log | tr -s ' ' | tr '\n' '|' | cut -c1-600)"
    grep -o '"cuda_graph": [a-z]*' $OUT/d/$p-$v.json | tr '\n' ' '; echo
  done
done
NP=4 BUDGET_S=200 OUT=$OUT/d/bench4 make bench-gpu 2>&1 | grep -E "^\[|Targets|^\| (all|reduce|broadcast|moerun|torchrun|mixtral|qwen3|deepseek)"
cd $OUT && tar czf d.tgz d
