#!/usr/bin/env bash
# Session 3, command B (1 GPU): the tensor-core decode kernel and prefill buckets, tested and compared.
export NCCL_NVLS_ENABLE=0
o=$OUT/b; mkdir -p $o
T0=$(date +%s)
st() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
nvidia-smi -L
timeout 200 bin/gpuops.test -test.v -test.run 'Expert|Graph|Choose|Bucket|GEMV' > $o/gpuops.log 2>&1; st "gpuops rc=$?"; grep -E "^(--- |ok|FAIL|PASS)|panic|error" $o/gpuops.log | head -20
r() { # r NAME ENV... -- ARGS
  local name=$1; shift; local e=(); while [ "$1" != -- ]; do e+=("$1"); shift; done; shift
  env "${e[@]}" timeout 120 bin/launch -np 1 bin/worker run --backend nccl --match-ref --iters 20 --warmup 3 --phases --json $o/$name.json "$@" > $o/$name.log 2>&1
  st "$name rc=$?"; grep -E "^\[0\] +[0-9]+ " $o/$name.log | head -8
}
for k in mma gemv cublas; do
  r ds-$k MOERUN_EXPERT_GEMM=$k -- --preset deepseek-v3 --tokens 1,16,64,128
  r qw-$k MOERUN_EXPERT_GEMM=$k -- --preset qwen3-30b-a3b --tokens 16,128,256
  r mx-$k MOERUN_EXPERT_GEMM=$k -- --preset mixtral --tokens 16,64,128,256
done
r ds-pre-bucket -- --preset deepseek-v3 --tokens 1024,4096,8192
r ds-pre-nobucket MOERUN_BUCKETS=0 -- --preset deepseek-v3 --tokens 1024,4096,8192
r qw-pre-bucket -- --preset qwen3-30b-a3b --tokens 1024,4096,8192
r qw-pre-nobucket MOERUN_BUCKETS=0 -- --preset qwen3-30b-a3b --tokens 1024,4096,8192
timeout 150 bin/launch -np 1 bin/worker run --backend nccl --preset deepseek-v3 --tokens 16,128,1024 --check > $o/chk-ds.log 2>&1; st "chk-ds rc=$?"; grep -E "check" $o/chk-ds.log | head
timeout 100 bin/launch -np 1 bin/worker run --backend nccl --preset mixtral --tokens 16,128 --check > $o/chk-mx.log 2>&1; st "chk-mx rc=$?"; grep -E "check" $o/chk-mx.log | head
cd $OUT && tar czf b.tgz b
