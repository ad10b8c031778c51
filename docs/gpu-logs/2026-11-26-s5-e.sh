#!/usr/bin/env bash
# Session 5, command E (4 GPUs): NP=4 bench/validate.sh at commit 8a76b88 (dispatch + combine now also in the timed passes and alone; the cost model's 4-GPU fit).
export NCCL_NVLS_ENABLE=0
mkdir -p $OUT/e
echo "commit 8a76b88"; date -u
NP=4 BUDGET_S=500 bench/validate.sh $OUT/e/validate4 2>&1 | tail -40
grep -h "predicted\|phases" $OUT/e/validate4/dispatch-*.log
cd $OUT && tar czf e.tgz e
