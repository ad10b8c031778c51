#!/usr/bin/env bash
# Session 4, command H (4 GPUs, the first lent): topology and bindings, make bench-gpu at
# EP = DP = 4 (shorter collectives sweep), then the --check matrix at np 4 and dispatch +
# combine, within the session's last device minutes.
export NCCL_NVLS_ENABLE=0
mkdir -p $OUT/h
{
nvidia-smi -L; nvidia-smi topo -m
bin/launch --show-topology
bin/launch -np 4 --tp 2 --dp 2 --ep --report-bindings bin/worker --backend nccl collectives -b 8K -e 8K --ops all_reduce -n 1 -w 0 2>&1 | head -12
} > $OUT/h/topology.txt 2>&1
cat $OUT/h/topology.txt
NP=4 BUDGET_S=125 COLL_FLAGS="-b 8K -e 1G -f 2 -d bf16 -n 20 -w 3" OUT=$OUT/h/bench4 make bench-gpu 2>&1 | tail -75
NP=4 BUDGET_S=135 bench/validate.sh $OUT/h/validate4 2>&1 | tail -40
cd $OUT && tar czf h.tgz h
