#!/usr/bin/env bash
# Session 5, command B (4 GPUs): the --check matrix at np 4 (24 runs), dispatch + combine at
# 128 tokens per rank with EP = DP = 4 beside the cost model's prediction.
export NCCL_NVLS_ENABLE=0
mkdir -p $OUT/b
echo "commit 3fe26fd"; date -u
NP=4 BUDGET_S=560 bench/validate.sh $OUT/b/validate4 2>&1 | tail -40
cd $OUT && tar czf b.tgz b
