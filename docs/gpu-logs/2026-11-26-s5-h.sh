#!/usr/bin/env bash
# Session 5, command H (4 GPUs, commit d2568e6): make bench-gpu at NP=2 (two of the four GPUs)
export NCCL_NVLS_ENABLE=0; echo "commit d2568e6"; date -u; NP=2 BUDGET_S=190 OUT=$OUT/h/bench2 make bench-gpu 2>&1 | grep -E "^\[|Targets|^\| (all|reduce|moerun|torchrun|mixtral|qwen3|deepseek)"; cd $OUT && tar czf h.tgz h
