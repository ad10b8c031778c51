#!/usr/bin/env bash
# Session 5, command A (4 GPUs): topology + bindings, then make bench-gpu at EP = DP = 4.
export NCCL_NVLS_ENABLE=0
mkdir -p $OUT/a
{
echo "commit 3fe26fd"; date -u
nvidia-smi -L; nvidia-smi topo -m
bin/launch --show-topology
bin/launch -np 4 --tp 2 --dp 2 --ep --report-bindings bin/worker --backend nccl collectives -b 8K -e 8K --ops all_reduce -n 1 -w 0 2>&1 | head -12
} > $OUT/a/topology.txt 2>&1
cat $OUT/a/topology.txt | head -40
NP=4 BUDGET_S=520 OUT=$OUT/a/bench4 make bench-gpu 2>&1 | tail -90
cd $OUT && tar czf a.tgz a
