#!/usr/bin/env bash
export NCCL_NVLS_ENABLE=0
out=${OUT:-/tmp}
nvidia-smi -L
timeout 120 bin/gpuops.test -test.v 2>&1 | grep -E "^(--- |PASS|FAIL|ok)|rror" | head -20
ok=1
chk() { echo "== $*"; timeout 90 bin/launch -np 2 "$@" 2>&1 | grep -E "check|rror|^\[0\] +[0-9]" | tail -4; [ ${PIPESTATUS[0]} = 0 ] || ok=0; }
chk --dp 2 --ep bin/worker --backend nccl run --preset deepseek-v3 --tokens-per-rank 2,7 --check --json $out/ds.json
grep -o '"cuda_graph": [a-z]*' $out/ds.json | head -2
chk --dp 2 --ep bin/worker --backend nccl run --preset qwen3-30b-a3b --tokens-per-rank 3,16 --check
chk --tp 2 bin/worker --backend nccl run --preset mixtral --tokens 1,300 --check
chk --dp 2 --ep bin/worker --backend nccl run --preset tiny-deepseek --tokens-per-rank 3,9 --chunk 2 --check
flags=""; [ $ok = 1 ] || { flags="--graph off"; echo "A CHECK FAILED: bench with --graph off"; }
RUN_FLAGS="$flags" COLL_FLAGS="-b 8K -e 16M -f 8 -d bf16 -n 5 -w 1" BUDGET_S=${BUDGET_S:-170} bash bench/gpu.sh $out/bench 2>&1 | grep -E "^\[|^\| (mixtral|qwen|deepseek)|moerun  *\||torchrun"
tar czf $out/bench.tgz -C $out bench
rm -rf $out/bench
