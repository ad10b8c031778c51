#!/usr/bin/env bash
# Session 6, command E (4 GPUs): NP=4 bench/validate.sh at the commit in .gpu/commit
# (--check over the world-4 layouts x 3 presets x chunk 256, 1 and 256 overlapped).
export NCCL_NVLS_ENABLE=0
echo "commit $(cat .gpu/commit)"; date -u
mkdir -p $OUT/e
NP=4 BUDGET_S=350 bench/validate.sh $OUT/e/validate4 2>&1 | tail -45
cd $OUT && tar czf e.tgz e
