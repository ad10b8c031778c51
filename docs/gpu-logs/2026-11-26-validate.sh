#!/usr/bin/env bash
# GPU validation of issue 4: test binaries, the collectives sweep, and worker run --check over
# presets × layouts × chunk sizes with uneven tokens per DP rank. Usage: validate.sh PART
export NCCL_NVLS_ENABLE=0
out=${OUT:-/tmp}
t() { local s=$SECONDS; echo "== $*"; timeout ${TMO:-150} "$@" > $out/step.log 2>&1; local rc=$?; grep -v "^\[.\] #" $out/step.log | grep -E "check|FAIL|rror|panic|ok|PASS|wrong|tokens|^\[0\] +[0-9]" | tail -${TAIL:-6}; echo "rc=$rc ($((SECONDS-s)) s)"; cat $out/step.log >> $out/all.log; }
matrix() {
  local p=$1
  for layout in "--tp 2" "--dp 2 --ep" "--dp 2" "--pcp 2"; do
    case "$layout" in
      --dp*) t1="--tokens-per-rank 2,5"; t256="--tokens-per-rank 3,300";;
      *)     t1="--tokens 5"; t256="--tokens 300";;
    esac
    t bin/launch -np 2 $layout bin/worker run --backend nccl --preset $p $t1 --chunk 1 --check
    t bin/launch -np 2 $layout bin/worker run --backend nccl --preset $p $t256 --chunk 256 --check
  done
}
case "$1" in
  a)
    nvidia-smi -L; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
    TAIL=40 t bin/cuda.test -test.v
    TAIL=30 t bin/nccl.test -test.v
    TAIL=30 t bin/gpuops.test -test.v
    TAIL=200 t bin/launch -np 2 bin/worker collectives --backend nccl --json $out/collectives.json
    for p in tiny tiny-deepseek mixtral qwen3-30b-a3b; do matrix $p; done ;;
  b)
    nvidia-smi -L
    TMO=240; for p in deepseek-v2-lite deepseek-v3; do matrix $p; done ;;
  one)
    nvidia-smi -L
    TAIL=30 t bin/gpuops.test -test.v
    TMO=240
    for p in tiny tiny-deepseek mixtral qwen3-30b-a3b deepseek-v2-lite deepseek-v3; do
      t bin/launch -np 1 bin/worker run --backend nccl --preset $p --tokens 5 --chunk 1 --check
      t bin/launch -np 1 bin/worker run --backend nccl --preset $p --tokens 300 --chunk 256 --check
    done ;;
esac
