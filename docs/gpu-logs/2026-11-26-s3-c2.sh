#!/usr/bin/env bash
# Session 3, command C2 (2 GPUs): make bench-gpu, whole.
export NCCL_NVLS_ENABLE=0
git log --oneline -1 2>/dev/null
BUDGET_S=545 OUT=$OUT/bench make bench-gpu
rc=$?
cd $OUT && tar czf bench.tgz bench && ls -la
exit $rc
