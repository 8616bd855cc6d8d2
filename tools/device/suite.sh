#!/usr/bin/env bash
# End-to-end GPU suite, run on the GPU machine from the repository root with a prebuilt
# `xtask` binary in .device/ (built on the CPU machine with
# `cargo build -p xtask --features cuda` and copied to .device/xtask).
#   1. `xtask bench --backend cuda --calibrate`: attention at the real sizes (dense, each
#      pattern at several densities, Burn's built-in attention) and the Wan2.1-1.3B
#      denoiser step at 480p x 81 frames (random bf16 weights), dense and with a plan;
#      writes the cost table.
#   2. The denoiser steps of Wan2.1-1.3B, CogVideoX1.5-5B and HunyuanVideo at their real
#      sizes (env MODELS, e.g. "wan hunyuan:dense", MODEL_REPEATS, MODEL_TIMEOUT, PLAN), one process per model, with
#      peak GPU memory sampled by nvidia-smi.
# Usage: OUT=dir bash tools/device/suite.sh [attention|model|search|all]
#   3. `xtask search` through the Wan2.1-1.3B model (GPU candidate evaluation), then the
#      denoiser step with the searched plan.
set -u
OUT=${OUT:-/tmp/suite_out}
mkdir -p "$OUT"
WHAT=${1:-all}
BIN=${BIN:-.device}
GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
{
  date -u +%FT%TZ
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  nvcc --version | tail -2
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

sample_memory() { # sample used GPU memory (MiB) every 50 ms into $1 until killed
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 50 > "$1" 2>/dev/null &
  echo $!
}

if [[ $WHAT == attention || $WHAT == all ]]; then
  echo "== attention suite + calibrate"
  timeout 300 ./$BIN/xtask bench --backend cuda --skip-model --calibrate --repeats 3 \
    --device-name "$GPU" --out "$OUT/attention" 2> "$OUT/attention.log" > /dev/null
  echo "rc=$?"; tail -3 "$OUT/attention.log"
fi

if [[ $WHAT == model || $WHAT == all ]]; then
  # One process per model (or model:mode, e.g. hunyuan:dense) so that the sampled peak
  # GPU memory is that model's and a 720p HunyuanVideo step fits a process time limit.
  for entry in ${MODELS:-wan cogvideox hunyuan:dense hunyuan:plan}; do
    m=${entry%%:*}; mode=${entry#*:}; [[ $mode == "$entry" ]] && mode=dense,plan
    tag=${entry/:/_}
    echo "== $m denoiser step at its real size (bf16, random weights): $mode"
    PLAN_ARGS=""
    [[ -n "${PLAN:-}" ]] && PLAN_ARGS="--plan $PLAN"
    pid=$(sample_memory "$OUT/model_${tag}_mem.txt")
    timeout ${MODEL_TIMEOUT:-300} ./$BIN/xtask bench --backend cuda --skip-attention --models $m \
      --modes $mode --repeats ${MODEL_REPEATS:-2} $PLAN_ARGS --device-name "$GPU" --out "$OUT/model_$tag" \
      2> "$OUT/model_$tag.log" > /dev/null
    echo "rc=$?"; kill "$pid" 2>/dev/null
    tail -4 "$OUT/model_$tag.log"
    echo "peak GPU memory used (MiB), $entry: $(sort -n "$OUT/model_${tag}_mem.txt" | tail -1)"
  done
fi

if [[ $WHAT == search || $WHAT == all ]]; then
  echo "== model-driven search on Wan2.1-1.3B (random bf16 weights) at 480p x 81 frames"
  mkdir -p "$OUT/search"
  COST=""
  [[ -f "$OUT/attention/cost_table.ron" ]] && COST="--cost-table $OUT/attention/cost_table.ron"
  [[ -n "${COST_TABLE:-}" ]] && COST="--cost-table $COST_TABLE"
  start=$(date +%s)
  timeout ${SEARCH_TIMEOUT:-420} ./$BIN/xtask search --preset wan2.1-t2v-1.3b --backend cuda --dtype bf16 \
    --latent 21x60x104 --schedule-steps ${SEARCH_STEPS:-3} --capture-steps ${SEARCH_CAPTURE:-1} --seeds 0 \
    --block-size 128 --measure-attention $COST ${SEARCH_ARGS:-} --out "$OUT/search/plan.ron" --report "$OUT/search/report.json" \
    > "$OUT/search/search.log" 2>&1
  echo "search rc=$? wall $(( $(date +%s) - start )) s"; tail -5 "$OUT/search/search.log"
  if [[ -f "$OUT/search/plan.ron" ]]; then
    echo "== Wan2.1-1.3B step with the searched plan"
    pid=$(sample_memory "$OUT/search/mem.txt")
    timeout 120 ./$BIN/xtask bench --backend cuda --skip-attention --repeats 2 --plan "$OUT/search/plan.ron" \
      --device-name "$GPU" --out "$OUT/search/step" 2> "$OUT/search/step.log" > /dev/null
    echo "rc=$?"; kill "$pid" 2>/dev/null; tail -3 "$OUT/search/step.log"
    echo "peak GPU memory used (MiB): $(sort -n "$OUT/search/mem.txt" | tail -1)"
  fi
fi
