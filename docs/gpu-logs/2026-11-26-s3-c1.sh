#!/usr/bin/env bash
# Session 3, command C1 (1 GPU): tests, then the tensor-core kernel's variants against GEMV.
export NCCL_NVLS_ENABLE=0
o=$OUT/c1; mkdir -p $o
T0=$(date +%s)
st() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
nvidia-smi -L
timeout 200 bin/gpuops.test -test.v > $o/gpuops.log 2>&1; st "gpuops rc=$?"; grep -E "^(--- |ok|FAIL|PASS)|panic|error|gpu_test" $o/gpuops.log | head -30
r() { # r NAME ENV... -- ARGS
  local name=$1; shift; local e=(); while [ "$1" != -- ]; do e+=("$1"); shift; done; shift
  env "${e[@]}" timeout 120 bin/launch -np 1 bin/worker run --backend nccl --match-ref --iters 30 --warmup 3 --phases --json $o/$name.json "$@" > $o/$name.log 2>&1
  echo "$(st "$name rc=$?") $(grep -E "^\[0\] +[0-9]+ " $o/$name.log | awk '{printf "%s:%s ", $2, $4}')"
}
for v in "" h l ln; do
  r ds-mma$v MOERUN_MMA_VARIANT=$v -- --preset deepseek-v3 --tokens 1,16,32,64,128
  r qw-mma$v MOERUN_MMA_VARIANT=$v -- --preset qwen3-30b-a3b --tokens 16,64,128,256
  r mx-mma$v MOERUN_MMA_VARIANT=$v -- --preset mixtral --tokens 1,16,64,128
done
r ds-gemv MOERUN_EXPERT_GEMM=gemv -- --preset deepseek-v3 --tokens 1,16,32,64,128
r mx-gemv MOERUN_EXPERT_GEMM=gemv -- --preset mixtral --tokens 1,16,64,128
r ds-mma-again -- --preset deepseek-v3 --tokens 1,16,32,64,128
cd $OUT && tar czf c1.tgz c1
