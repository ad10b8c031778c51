#!/usr/bin/env bash
# Session 4, command C (2 GPUs): tensor-core variants at 64 rows per expert (mixtral 128
# tokens/rank, EP 2) and the 128-token rows; start-up pieces.
export NCCL_NVLS_ENABLE=0
o=$OUT/c; mkdir -p $o
nvidia-smi -L
echo "== driver and NCCL load times"
python3 - <<'PY'
import ctypes,time
t=time.perf_counter(); c=ctypes.CDLL('libcuda.so.1'); t1=time.perf_counter()
c.cuInit(0); t2=time.perf_counter(); n=ctypes.c_int(); c.cuDeviceGetCount(ctypes.byref(n)); t3=time.perf_counter()
l=ctypes.CDLL('libnccl.so.2'); t4=time.perf_counter(); v=ctypes.c_int(); l.ncclGetVersion(ctypes.byref(v)); t5=time.perf_counter()
print("dlopen cuda %.1f ms, cuInit %.1f ms, count %.1f ms, dlopen nccl %.1f ms, version %.1f ms"%((t1-t)*1e3,(t2-t1)*1e3,(t3-t2)*1e3,(t4-t3)*1e3,(t5-t4)*1e3))
PY
echo "== kernel tests (all variants)"
bin/gpuops.test -test.run 'TestExpertGEMMKernels|TestGraph' -test.v 2>&1 | grep -E "^(=== RUN|--- |ok|FAIL|PASS)" | grep -v "=== RUN" | tail -30
run1() { # name preset tokens env...
  local name=$1 p=$2 t=$3; shift 3
  env "$@" bin/launch -np 2 --dp 2 --ep bin/worker --backend nccl run --preset $p --match-ref --tokens $t --iters 30 --warmup 5 --json $o/$name.json > $o/$name.log 2>&1 || echo "$name failed"
  python3 -c "
import json,sys;d=json.load(open('$o/$name.json'))
for r in d['rows']: print('%-28s %5d tok  %.3f ms (min %.3f)  bound %.3f  experts %.3f  %s'%('$name',r['tokens_per_dp_rank'][0],r['ms_median'],r['ms_min'],r['bound_ms'],r['phases_ms'].get('experts',0),'graph' if r.get('cuda_graph') else ''))"
}
echo "== variants, interleaved twice"
for rep in 1 2; do
  for p in mixtral deepseek-v3 qwen3-30b-a3b; do
    tk=128; [ $p = mixtral ] && tk=64,128
    run1 $p-default-$rep $p $tk X=1
    run1 $p-mma-$rep $p $tk MOERUN_EXPERT_GEMM=mma
    run1 $p-m2-$rep $p $tk MOERUN_EXPERT_GEMM=mma MOERUN_MMA_VARIANT=m2h
    run1 $p-m2p4-$rep $p $tk MOERUN_EXPERT_GEMM=mma MOERUN_MMA_VARIANT=m2p4
    [ $p = mixtral ] && run1 $p-cublas-$rep $p $tk MOERUN_EXPERT_GEMM=cublas
  done
done
cd $OUT && tar czf c.tgz c
