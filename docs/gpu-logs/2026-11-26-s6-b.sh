#!/usr/bin/env bash
# Session 6, command B (4 GPUs): why the one-chunk split loses. At 4096 tokens/rank, NP=4:
# default; --chunk 2048 (the split without overlap); --overlap 2048; both with
# NCCL_MAX_NCHANNELS=8 (fewer SMs for NCCL beside the GEMMs); chunk 256 ± overlap with 8
# channels. Then the nccl conformance test with worlds in turn (new) and the old one's log.
export NCCL_NVLS_ENABLE=0
echo "commit $(cat .gpu/commit) + worlds-in-turn conformance"; date -u
mkdir -p $OUT/b
echo "## nccl.test (worlds in turn)"; timeout 120 bin/nccl.test -test.v 2>&1 | grep -E "^\s*(--- |ok|PASS|FAIL|panic)|nccl_test" | tr -s ' ' | tr '\n' ' ' | cut -c1-1500; echo
for p in mixtral qwen3-30b-a3b deepseek-v3; do
  for v in default chunk2048 overlap default-ch8 overlap-ch8 overlap-ch4 chunk256-ch8 chunk256overlap-ch8; do
    e=""; case $v in *-ch8) e="NCCL_MAX_NCHANNELS=8";; *-ch4) e="NCCL_MAX_NCHANNELS=4";; esac
    case $v in
      default*) f="";;
      chunk2048) f="--chunk 2048";;
      overlap*) f="--overlap 2048";;
      chunk256-*) f="--chunk 256";;
      chunk256overlap*) f="--chunk 256 --overlap 2048";;
    esac
    log=$OUT/b/$p-$v.log
    env $e timeout 90 bin/launch -np 4 --dp 4 --ep bin/worker --backend nccl run --preset $p --match-ref --iters 20 --warmup 3 --tokens 4096 $f > $log 2>&1
    echo "$p $v rc=$? :: $(grep -E '^(\[0\])? +[0-9]|rror' $log | tr -s ' ' | tr '\n' '|' | cut -c1-300)"
  done
done
echo "## old nccl.test (worlds side by side), collectives only"; timeout 75 bin/nccl-old.test -test.v -test.run 'ConformanceOnGPUs/collectives' > $OUT/b/nccl-old.log 2>&1; echo "rc=$?"; grep -E "^\s*(--- |FAIL|panic)|deadline|rror" $OUT/b/nccl-old.log | head -12
cd $OUT && tar czf b.tgz b
