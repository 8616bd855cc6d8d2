#!/usr/bin/env bash
# Denoiser steps, ours against diffusers, in one run on the GPU machine (issue #14 report).
# Run from the repository root with prebuilt binaries in .device/ (built on the CPU machine:
#   cargo build --release -p xtask --features cuda            -> .device/xtask
#   cargo test --release -p vdit-ops --features cuda --no-run -> .device/vdit_ops_linear)
# and the diffusers wheels in .whl/ (tools/peers_step_wheels.sh); carry `.device` and `.whl`.
#   1. CUDA tests of the cuBLASLt Linear (f64 reference, bf16/f16, both weight layouts).
#   2. Our dense self-attention at the real sizes (for the non-attention time).
#   3. Our denoiser steps (dense and the fixed mixed plan), one process per model.
#   4. diffusers' steps (tools/peers_step.py, default SDPA), same models.
#   5. tools/steps_summary.py: steps.json / steps.md (SDPA timed there too).
# Usage: OUT=dir MODELS="wan cogvideox" REPEATS=2 bash tools/device/steps.sh
set -u
OUT=${OUT:-/tmp/steps_out}
MODELS=${MODELS:-wan cogvideox}
REPEATS=${REPEATS:-2}
mkdir -p "$OUT"
export CUDA_PATH=${CUDA_PATH:-/usr/local/cuda}
export LD_LIBRARY_PATH=/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
{
  date -u +%FT%TZ
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  git rev-parse HEAD 2>/dev/null || true
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

for z in .device/*.gz; do [[ -e $z ]] && gunzip -f "$z" && chmod +x "${z%.gz}"; done

echo "== end-to-end Linear check: bf16 (cuBLASLt) against f32 (Burn matmul), same weights and inputs"
for m in ${CHECK_MODELS:-wan2.1-t2v-1.3b:5x30x52}; do
  preset=${m%%:*}; latent=${m#*:}
  timeout 120 ./.device/xtask forward --preset "$preset" --random-weights --random-inputs --latent "$latent" \
    --backend cuda --dtype f32 --save-inputs /tmp/in_$preset.safetensors --out /tmp/ref_$preset.safetensors \
    > "$OUT/check_$preset.log" 2>&1
  timeout 120 ./.device/xtask forward --preset "$preset" --random-weights --inputs /tmp/in_$preset.safetensors \
    --backend cuda --dtype bf16 --expect /tmp/ref_$preset.safetensors >> "$OUT/check_$preset.log" 2>&1
  echo "rc=$? $preset"; grep -iE 'rel|error|warn' "$OUT/check_$preset.log" | tail -3
done

if [[ -n ${OOM_CHECK:-} ]]; then
  # A forward far larger than the device (Wan2.1-14B in f32, batch 8 at 720p): it must end
  # with a typed out-of-memory error and exit code 1, not a panic or an abort.
  echo "== device out of memory"
  timeout 180 ./.device/xtask forward --preset wan2.1-t2v-14b --random-weights --random-inputs \
    --latent 21x90x160 --batch 8 --backend cuda --dtype f32 --out /tmp/oom.safetensors > "$OUT/oom.log" 2>&1
  echo "rc=$? (expected 1)"; tail -3 "$OUT/oom.log"; ls /tmp/oom.safetensors 2>/dev/null && echo "UNEXPECTED: output written"
fi

if [[ -x .device/vdit_ops_linear ]]; then
  echo "== cuBLASLt Linear tests"
  timeout 120 ./.device/vdit_ops_linear --test-threads 1 > "$OUT/tests.log" 2>&1
  echo "rc=$?"; grep -E '^test |test result' "$OUT/tests.log"
fi

echo "== our dense attention at the real sizes"
timeout 240 ./.device/xtask bench --backend cuda --skip-model --attention-dense-only --repeats 3 \
  --device-name "$GPU" --out "$OUT/attention" 2> "$OUT/attention.log" > /dev/null
echo "rc=$?"; grep -E 'dense' "$OUT/attention.log" | head -8

OURS=()
models_csv=""
for m in $MODELS; do
  echo "== ours: $m step"
  timeout ${MODEL_TIMEOUT:-300} ./.device/xtask bench --backend cuda --skip-attention --models "$m" \
    --repeats "$REPEATS" --device-name "$GPU" --out "$OUT/model_$m" 2> "$OUT/model_$m.log" > /dev/null
  echo "rc=$?"; grep -E ' (dense|plan): ' "$OUT/model_$m.log"
  OURS+=(--ours "$OUT/model_$m/report.json")
  models_csv=${models_csv:+$models_csv,}$m
done

echo "== diffusers: $models_csv"
OUT="$OUT/peers" STEP_TIMEOUT=${PEER_TIMEOUT:-300} bash tools/device/peers_step.sh \
  --models "$models_csv" --warmup 1 --repeats "$REPEATS" > "$OUT/peers.log" 2>&1
echo "rc=$?"; grep -E 'median' "$OUT/peers.log"

echo "== summary"
PYTHONPATH=/tmp/site python3 tools/steps_summary.py --ours-attention "$OUT/attention/report.json" \
  "${OURS[@]}" --peers "$OUT/peers/peers_step.json" --out "$OUT"

# What comes back from the machine is limited to a few files: keep the summary and one
# archive of everything else.
tar czf /tmp/steps_all.tgz -C "$OUT" . && find "$OUT" -mindepth 1 -delete && mv /tmp/steps_all.tgz "$OUT/all.tgz"
tar xzf "$OUT/all.tgz" -C "$OUT" ./steps.json ./steps.md ./env.txt 2>/dev/null
ls -la "$OUT"
