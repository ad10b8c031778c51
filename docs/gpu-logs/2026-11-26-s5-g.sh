#!/usr/bin/env bash
# Session 5, command G (4 GPUs, commit d2568e6: the poll naps): make bench-gpu at NP=4 again,
# then the collectives at world 2 beside coll_bench.py (benchreport of those alone).
export NCCL_NVLS_ENABLE=0
mkdir -p $OUT/g/np2
echo "commit d2568e6"; date -u
NP=4 BUDGET_S=200 OUT=$OUT/g/bench4 make bench-gpu 2>&1 | grep -E "^\[|Targets|^\| (all|reduce|broadcast|moerun|torchrun|mixtral|qwen3|deepseek)"
export CUDA_VISIBLE_DEVICES=0,1
timeout 60 bin/launch -np 2 bin/worker --backend nccl collectives -b 8K -e 1G -f 2 -d bf16 -n 50 -w 5 --json $OUT/g/np2/collectives.json > $OUT/g/np2/collectives.log 2>&1
timeout 90 python3 -m torch.distributed.run --nproc-per-node 2 .gpu/bench/coll_bench.py > $OUT/g/np2/coll_bench.txt 2>$OUT/g/np2/coll_bench.log
bin/benchreport --results $OUT/g/np2 --out $OUT/g/np2 > /dev/null 2>&1
sed -n '/## (b)/,/## (c)/p' $OUT/g/np2/comparison.md | grep -E "^\| (all|reduce)"
cd $OUT && tar czf g.tgz g
