#!/usr/bin/env bash
# kernel-speed runs: CUDA tests for $TEST_FAST variants, quick Wan2.1-480p timing for $TIME_VARIANTS (fast:warps),
# resource usage of the bench's d128 kernels.
set -u
B=.device-kernel
mkdir -p $OUT
{ date -u +%FT%TZ; nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv,noheader; } > $OUT/env.txt 2>&1; cat $OUT/env.txt
for f in ${TEST_FAST:-1}; do
  export VDIT_TC_FAST=$f; [[ $f == d ]] && unset VDIT_TC_FAST
  timeout ${TEST_TIMEOUT:-90} ./$B/sparse_attention cuda:: --test-threads 1 > /tmp/tests_fast$f.log 2>&1; rc=$?; cat /tmp/tests_fast$f.log >> $OUT/tests.log
  echo "tests fast=$f rc=$rc" | tee -a $OUT/tests.log; grep -E "^test |test result|panicked" /tmp/tests_fast$f.log | head -12
done
for v in ${TIME_VARIANTS:-0:4 1:4 2:4 1:8 0:4 1:4}; do
  f=${v%:*}; w=${v#*:}; rm -f /tmp/cubecl.log
  export VDIT_TC_FAST=$f; [[ $f == d ]] && unset VDIT_TC_FAST
  VDIT_TC_WARPS=$w CUBECL_DEBUG_LOG=1 timeout ${BENCH_TIMEOUT:-45} ./$B/kernel_bench --out /tmp/kq$f$w --quick --only ${ONLY:-wan21_480p} > /tmp/kq.out 2>&1
  echo "== fast=$f warps=$w rc=$?" | tee -a $OUT/bench.log; cat /tmp/kq$f$w/kernels.log | tee -a $OUT/bench.log
  [[ -f /tmp/cubecl_f$f.log ]] || cp /tmp/cubecl.log /tmp/cubecl_f$f.log 2>/dev/null
done
python3 - <<'PY' > $OUT/resource.txt 2>&1
import re, subprocess, os, glob
for logf in sorted(glob.glob("/tmp/cubecl_f*.log")):
    log = open(logf, errors="replace").read(); n = 0
    for blk in log.split("[START_KERNEL_COMPILATION]")[1:]:
        if "sparse_attn_mma" not in blk.split("source:")[0]: continue
        m = re.search(r"source:\n```[a-z]*\n(.*?)\n```\n\[END_KERNEL_COMPILATION\]", blk, re.S)
        if not m: continue
        src = m.group(1).replace("uint64 *mbar_ptr", "auto *mbar_ptr")
        path = f"/tmp/{os.path.basename(logf)[:-4]}_{n}.cu"; open(path, "w").write(src); n += 1
        r = subprocess.run(["nvcc", "-gencode=arch=compute_90a,code=sm_90a", "--resource-usage", "-cubin", path, "-o", path + ".cubin"], capture_output=True, text=True)
        lines = [l for l in r.stderr.splitlines() if "registers" in l or "spill" in l or "error" in l]
        print(path, "|", " ".join(x.strip() for x in lines[:6]))
        if n == 1 and os.environ.get("SASS_F", "3") in os.path.basename(logf):
            s = subprocess.run(["cuobjdump", "-sass", path + ".cubin"], capture_output=True, text=True).stdout
            open(os.environ["OUT"] + "/sass_f%s.txt" % os.environ.get("SASS_F", "3"), "w").write(s)
            ops = re.findall(r"^\s+/\*[0-9a-f]+\*/\s+(?:@!?P\d\s+)?([A-Z0-9_]+)", s, re.M)
            from collections import Counter
            print("SASS op counts:", Counter(o.split('.')[0] for o in ops).most_common(25))
        if n >= 1: break
PY
cat $OUT/resource.txt
echo "== summary"; grep -E "^==|dense" $OUT/bench.log
for f in ${ALL_FAST:-}; do
  export VDIT_TC_FAST=$f; [[ $f == d ]] && unset VDIT_TC_FAST
  timeout 100 ./$B/kernel_bench --out /tmp/kall$f --quick > /tmp/kall.out 2>&1
  echo "== all models quick fast=$f rc=$?" | tee -a $OUT/bench_all.log; grep -E " dense " /tmp/kall$f/kernels.log | tee -a $OUT/bench_all.log
  cp /tmp/kall$f/kernels.json $OUT/kernels_fast$f.json 2>/dev/null
done
