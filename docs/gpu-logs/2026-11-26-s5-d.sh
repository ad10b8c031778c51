#!/usr/bin/env bash
# Session 5, command D (4 GPUs): does each rank seeing only its own GPU (CUDA_VISIBLE_DEVICES
# of one entry, as Slurm's per-task binding gives) shorten start-up? cuInit alone, 4 at once,
# then the launcher's start-up both ways (rotated), NCCL's transports and bandwidth both ways.
export NCCL_NVLS_ENABLE=0
mkdir -p $OUT/d
exec > >(tee $OUT/d/d.log) 2>&1
echo "commit 3fe26fd"; date -u
cat > /tmp/ci.py <<'PY'
import ctypes, time, os, sys
t0 = time.time(); l = ctypes.CDLL("libcuda.so.1"); t1 = time.time(); r = l.cuInit(0); t2 = time.time()
n = ctypes.c_int(); l.cuDeviceGetCount(ctypes.byref(n)); d = ctypes.c_int(); l.cuDeviceGet(ctypes.byref(d), int(sys.argv[1]))
c = ctypes.c_void_p(); t3 = time.time(); l.cuDevicePrimaryCtxRetain(ctypes.byref(c), d); l.cuCtxSetCurrent(c); p = ctypes.c_void_p(); l.cuMemAlloc_v2(ctypes.byref(p), ctypes.c_size_t(1 << 20)); t4 = time.time()
print("visible=%s devices=%d dlopen %.3f cuInit %.3f ctx+alloc %.3f" % (os.environ.get("CUDA_VISIBLE_DEVICES"), n.value, t1 - t0, t2 - t1, t4 - t3))
PY
for round in 1 2; do
  echo "-- 4 at once, all visible"; for r in 0 1 2 3; do CUDA_VISIBLE_DEVICES=0,1,2,3 python3 /tmp/ci.py $r & done; wait
  echo "-- 4 at once, one each"; for r in 0 1 2 3; do CUDA_VISIBLE_DEVICES=$r python3 /tmp/ci.py 0 & done; wait
  echo "-- 1 alone, all visible"; CUDA_VISIBLE_DEVICES=0,1,2,3 python3 /tmp/ci.py 0
  echo "-- 1 alone, one"; CUDA_VISIBLE_DEVICES=0 python3 /tmp/ci.py 0
done
cat > /tmp/one.sh <<'SH'
#!/usr/bin/env bash
# keep only this rank's GPU visible
IFS=, read -ra g <<< "$CUDA_VISIBLE_DEVICES"; export CUDA_VISIBLE_DEVICES=${g[$LOCAL_RANK]}
exec "$@"
SH
chmod +x /tmp/one.sh
su() {
  local tag=$1; shift; local s=$(date +%s.%N)
  bin/launch -np 4 "$@" --backend nccl --log-level info collectives -b 8K -e 8K --ops all_reduce -n 1 -w 0 --json $OUT/d/su.json > $OUT/d/su-$tag-$i.log 2>&1
  python3 -c "import json,sys; d=json.load(open('$OUT/d/su.json'))[0]; s=float(sys.argv[1]); print('startup %s: comms %.3f first %.3f' % (sys.argv[2], d['comms_ready_unix_s']-s, d['ready_unix_s']-s))" $s $tag
}
for i in 1 2 3 4; do
  if ((i % 2)); then su all bin/worker; su one /tmp/one.sh bin/worker; else su one /tmp/one.sh bin/worker; su all bin/worker; fi
done
grep -h "store connected\|communicator ready\|job ready" $OUT/d/su-one-4.log
for m in all one; do
  echo "== $m: transports and all_gather/reduce_scatter 1M..128M"
  w=bin/worker; [[ $m == one ]] && w="/tmp/one.sh bin/worker"
  NCCL_DEBUG=INFO bin/launch -np 4 $w --backend nccl collectives -b 1M -e 128M -f 8 -d bf16 --ops all_gather,reduce_scatter -n 20 -w 3 > $OUT/d/coll-$m.log 2>&1
  grep -o "via [A-Za-z0-9/]*" $OUT/d/coll-$m.log | sort | uniq -c
  grep -E "^\[0\] +[0-9]+ " $OUT/d/coll-$m.log
done
cd $OUT && tar czf d.tgz d
