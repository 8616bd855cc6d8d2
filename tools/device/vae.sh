#!/usr/bin/env bash
# Wan2.1 VAE decoder at a real size on the GPU machine: diffusers' AutoencoderKLWan.decode
# (tools/vae_peer.py) and ours (crates/vdit-wan/examples/vae_decode.rs, prebuilt as
# .device/vae_decode.gz) on the same latent size, random weights, bf16, in one run.
# Carries `.device` and `.whl` (tools/peers_step_wheels.sh).
# Usage: OUT=dir LATENT=21x60x104 bash tools/device/vae.sh
set -u
OUT=${OUT:-/tmp/vae_out}
PY=${PY:-python3}
SITE=${SITE:-/tmp/site}
LATENT=${LATENT:-21x60x104}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 PIP_ROOT_USER_ACTION=ignore
export CUDA_PATH=${CUDA_PATH:-/usr/local/cuda}
source tools/device/wheels.sh || exit 1
{ date -u +%FT%TZ; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; } > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
for z in .device/vae_decode.gz; do [[ -e $z ]] && gunzip -f "$z" && chmod +x "${z%.gz}"; done
echo "== diffusers"
timeout ${PEER_TIMEOUT:-90} $PY tools/vae_peer.py --latent "$LATENT" 2>&1 | tail -3 | tee "$OUT/diffusers.jsonl"
echo "== ours"
timeout ${OURS_TIMEOUT:-150} ./.device/vae_decode --latent "$LATENT" 2>&1 | tail -3 | tee "$OUT/ours.jsonl"
echo "rc=${PIPESTATUS[0]} (124 = timed out)"
