#!/usr/bin/env bash
# Session 4, command B (2 GPUs): where start-up goes, and start-up A/B with more repeats.
export NCCL_NVLS_ENABLE=0
o=$OUT/b; mkdir -p $o
nvidia-smi -L
ts() { python3 -u -c 'import sys,time
t0=float(sys.argv[1])
for l in sys.stdin: sys.stdout.write("%.3f %s"%(time.time()-t0,l))' "$1"; }
tlib=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/nccl/lib/libnccl.so.2
W=(bin/worker --backend nccl --log-level info collectives -b 8K -e 8K --ops all_reduce -d bf16 -n 1 -w 0)
bin/launch -np 2 "${W[@]}" >/dev/null 2>&1
echo "== timeline (spawn stamped by a wrapper; NCCL's stdout line-buffered)"
for i in 1 2; do
s=$(date +%s.%N); NCCL_DEBUG=INFO NCCL_DEBUG_SUBSYS=INIT bin/launch -np 2 sh -c 'echo spawned; exec stdbuf -oL "$@"' sh "${W[@]}" 2>&1 | ts $s > $o/timeline-$i.log
grep -E "spawned|GPU\(s\)|store connected|NCCL version|Init START|Init timings|Init COMPLETE|communicator ready" $o/timeline-$i.log | cut -c1-230
done
echo "== A/B rotated"
vs=(default ib0 bindnone ib0+bindnone torchlib eager ib0+torchlib)
for rep in 1 2 3 4 5 6; do
  for k in $(seq 0 6); do
    v=${vs[$(( (k + rep) % 7 ))]}; args=(); envs=(X=1)
    case $v in *ib0*) envs+=(NCCL_IB_DISABLE=1);; esac
    case $v in *bindnone*) args=(--bind none);; esac
    case $v in *torchlib*) envs+=(MOERUN_NCCL_LIB=$tlib);; esac
    case $v in eager) envs+=(CUDA_MODULE_LOADING=EAGER);; esac
    s=$(date +%s.%N); env "${envs[@]}" bin/launch -np 2 "${args[@]}" "${W[@]}" 2>&1 | ts $s > $o/ab.log
    r=$(grep "communicator ready" $o/ab.log | grep -v world | tail -1 | cut -d' ' -f1); w=$(grep -m1 "store connected" $o/ab.log | cut -d' ' -f1)
    i=$(grep -m1 "communicator ready" $o/ab.log | grep -o 'init=[^ ]*'); d=$(grep -m1 "communicator ready" $o/ab.log | grep -o 'device wait"=[^ ]*')
    echo "ab $v rep $rep: worker up $w s, all ready $r s, $i $d"
  done
done | tee $o/ab.txt
python3 - $o/ab.txt <<'PY'
import sys,re,statistics as st
d={}
for l in open(sys.argv[1]):
    m=re.match(r"ab (\S+) rep \d+: worker up ([\d.]+) s, all ready ([\d.]+) s, init=([\d.]+)ms",l)
    if m: d.setdefault(m[1],[]).append((float(m[2]),float(m[3]),float(m[4])))
for k,v in d.items():
    print("%-14s n=%d worker-up %.3f  all-ready median %.3f min %.3f max %.3f  init median %.0f ms"%(k,len(v),st.median(x[0] for x in v),st.median(x[1] for x in v),min(x[1] for x in v),max(x[1] for x in v),st.median(x[2] for x in v)))
PY
cd $OUT && tar czf b.tgz b
