#!/usr/bin/env bash
# Session 5, command F (4 GPUs): the 2-4 % gap at 128 MiB against coll_bench.py — iteration
# count (ours 50 in make bench-gpu, PyTorch 20), the world communicator (the default: a
# blocking split of a non-blocking world, against MOERUN_NCCL_WORLD=blocking), PyTorch
# before and after.
export NCCL_NVLS_ENABLE=0
mkdir -p $OUT/f
exec > >(tee $OUT/f/f.log) 2>&1
echo "commit 3df9592"; date -u
tb() { echo "-- coll_bench.py"; timeout 120 python3 -m torch.distributed.run --nproc-per-node 4 .gpu/bench/coll_bench.py 2>/dev/null | grep " 134217728 B"; }
ours() {
  local tag=$1 n=$2; shift 2
  echo "-- ours $tag -n $n"
  env "$@" timeout 60 bin/launch -np 4 bin/worker --backend nccl collectives -b 128M -e 128M -d bf16 \
    --ops all_gather,reduce_scatter,all_reduce -n "$n" -w 5 2>&1 | grep -E '^\[0\] +134217728|^\[0\] # (all_gather|reduce_scatter|all_reduce)$'
}
tb
for r in 1 2; do
  ours default 20 X=1
  ours blocking-world 20 MOERUN_NCCL_WORLD=blocking
  ours default 50 X=1
done
tb
cd $OUT && tar czf f.tgz f
