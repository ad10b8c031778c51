#!/usr/bin/env bash
# One GPU validation pass: the GPU op tests, then worker run --check over presets and layouts.
export NCCL_NVLS_ENABLE=0
out=${OUT:-/tmp}
t() { echo "== $*"; timeout 120 "$@" 2>&1 | grep -v "^\[0\] #" | tail -4; echo "rc=${PIPESTATUS[0]}"; }
t bin/gpuops.test -test.v
t bin/launch -np 1 bin/worker run --preset tiny --tokens 1,37 --chunk 3 --check
for layout in "--tp 2" "--dp 2 --ep" "--dp 2" "--pcp 2"; do
  t bin/launch -np 2 $layout bin/worker run --preset tiny --tokens-per-rank 5,300 --chunk 256 --check
  t bin/launch -np 2 $layout bin/worker run --preset tiny-deepseek --tokens 1,9 --chunk 1 --check
done
t bin/launch -np 2 --dp 2 --ep bin/worker run --preset tiny-latent --tokens-per-rank 3,11 --chunk 3 --check
t bin/launch -np 2 --dp 2 --ep bin/worker run --preset mixtral --tokens 1,16,128 --check --json $out/mixtral.json
t bin/launch -np 2 --dp 2 --ep bin/worker run --preset qwen3-30b-a3b --tokens 1,16,128 --check --json $out/qwen3.json
