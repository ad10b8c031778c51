#!/usr/bin/env bash
# Session 4, command E (2 GPUs): make bench-gpu, whole.
export NCCL_NVLS_ENABLE=0
BUDGET_S=540 OUT=$OUT/bench make bench-gpu
rc=$?
cd $OUT && tar czf bench.tgz bench && ls -la
exit $rc
