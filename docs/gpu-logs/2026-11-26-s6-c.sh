#!/usr/bin/env bash
# Session 6, command C (4 GPUs, commit in .gpu/commit: overlap on by default for chunks of
# >= 512 dispatched rows, no one-chunk split): --check of overlapped chunked passes with
# shared experts, grouped top-k and sequence parallelism; make bench-gpu at NP=4, then NP=2
# on two of the GPUs.
export NCCL_NVLS_ENABLE=0
echo "commit $(cat .gpu/commit)"; date -u
mkdir -p $OUT/c
while read -r name layout preset tokens; do
  log=$OUT/c/check-$name.log
  timeout 120 bin/launch -np 4 ${layout//:/ } bin/worker --backend nccl run --preset $preset --chunk 256 --tokens-per-rank $tokens --iters 3 --check < /dev/null > $log 2>&1
  echo "check $name ($layout $preset $tokens) rc=$? :: $(grep -E '^(\[0\])? +[0-9]|check|rror|moerun run' $log | tr -s ' ' | tr '\n' '|' | cut -c1-400)"
done <<'RUNS'
dp4-deepseek --dp=4:--ep deepseek-v3 1024,700,1024,333
dp4-qwen3 --dp=4:--ep qwen3-30b-a3b 1024,700,1024,333
dp4-mixtral --dp=4:--ep mixtral 1024,700,1024,333
tp2dp2-deepseek --tp=2:--dp=2:--ep deepseek-v3 1024,333
tp2dp2-mixtral --tp=2:--dp=2:--ep mixtral 1024,333
RUNS
NP=4 BUDGET_S=200 OUT=$OUT/c/bench4 make bench-gpu 2>&1 | grep -E "^\[|Targets|^\| (all|reduce|broadcast|moerun|torchrun|mixtral|qwen3|deepseek)"
NP=2 BUDGET_S=190 OUT=$OUT/c/bench2 make bench-gpu 2>&1 | grep -E "^\[|Targets|^\| (all|reduce|broadcast|moerun|torchrun|mixtral|qwen3|deepseek)"
cd $OUT && tar czf c.tgz c
