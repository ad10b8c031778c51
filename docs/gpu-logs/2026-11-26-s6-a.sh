#!/usr/bin/env bash
# Session 6, command A (4 GPUs): first GPU run of --overlap. cuStreamWaitEvent in cuda.h;
# the GPU test binaries (TestBeside first); --overlap 2048 --check beside the default at
# 1024 and 4096 tokens/rank, 3 presets, NP=4 and NP=2, plus chunk 256 at 4096;

export NCCL_NVLS_ENABLE=0
echo "commit $(cat .gpu/commit)"; date -u
mkdir -p $OUT/a
echo "## cuda.h"; grep -n -A2 "cuStreamWaitEvent(" /usr/local/cuda/include/cuda.h | head -8
echo "## TestBeside"; timeout 120 bin/gpuops.test -test.run Beside -test.v 2>&1 | tail -15
for t in gpuops cuda nccl; do echo "## $t.test"; timeout 150 bin/$t.test 2>&1 | grep -E "^(--- |ok|PASS|FAIL|panic)" | tr '\n' ' '; echo; done
for np in 4 2; do
  if [ $np = 2 ]; then export CUDA_VISIBLE_DEVICES=0,1; fi
  for p in mixtral qwen3-30b-a3b deepseek-v3; do
    for v in default overlap chunk chunkoverlap; do
      case $v in
        default) f="--tokens 1024,4096";;
        overlap) f="--tokens 1024,4096 --overlap 2048 --check";;
        chunk) f="--tokens 4096 --chunk 256";;
        chunkoverlap) f="--tokens 4096 --chunk 256 --overlap 2048 --check";;
      esac
      log=$OUT/a/np$np-$p-$v.log
      timeout 90 bin/launch -np $np --dp $np --ep bin/worker --backend nccl run --preset $p --match-ref --iters 20 --warmup 3 $f --phases > $log 2>&1
      echo "np$np $p $v rc=$? :: $(grep -E '^(\[0\])? +[0-9]|check|rror|phases' $log | tr -s ' ' | tr '\n' '|' | cut -c1-700)"
    done
  done
done
unset CUDA_VISIBLE_DEVICES
cd $OUT && tar czf a.tgz a
