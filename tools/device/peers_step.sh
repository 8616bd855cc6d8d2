#!/usr/bin/env bash
# diffusers denoiser-step peer (tools/peers_step.py), run on the GPU machine from the
# repository root. The image has torch but not diffusers: the call carries `.whl`
# (see tools/peers_step_wheels.sh), installed here into /tmp/site:
#   .whl/*.whl            always: diffusers 0.42.1, importlib_metadata, zipp, lazy_importer
#   .whl/fallback/*.whl   only the ones whose distribution the image lacks (it had them all
#                         in 2026-11: huggingface_hub 1.33.0, safetensors 0.8.0, regex, ...)
# Usage: OUT=dir bash tools/device/peers_step.sh [peers_step.py arguments]
#   default arguments: --models wan,cogvideox,hunyuan --warmup 1 --repeats 3
#   env: STEP_TIMEOUT (seconds for the Python run, default 540), PY (interpreter, python3),
#        SITE (install folder, /tmp/site)
# Writes $OUT/env.txt, $OUT/peers_step.{json,md,log}.
set -u
OUT=${OUT:-/tmp/peers_step_out}
PY=${PY:-python3}
SITE=${SITE:-/tmp/site}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 PIP_ROOT_USER_ACTION=ignore

source tools/device/wheels.sh || exit 1

{
  date -u +%FT%TZ
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  $PY - <<'PY'
import importlib, sys
print("python", sys.version.split()[0])
for m in ("torch", "diffusers", "huggingface_hub", "transformers", "accelerate", "safetensors", "numpy", "PIL", "regex", "requests", "filelock", "importlib_metadata"):
    try:
        mod = importlib.import_module(m)
        print(m, getattr(mod, "__version__", "?"), mod.__file__)
    except Exception as e:  # noqa: BLE001
        print(m, "IMPORT FAILED", e)
import torch
print("cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version(), "gpu", torch.cuda.get_device_name() if torch.cuda.is_available() else None)
PY
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
$PY -c "from diffusers import WanTransformer3DModel, HunyuanVideoTransformer3DModel, CogVideoXTransformer3DModel" || exit 1

if [[ $# -eq 0 ]]; then set -- --models wan,cogvideox,hunyuan --warmup 1 --repeats 3; fi
set -o pipefail
timeout "${STEP_TIMEOUT:-540}" $PY tools/peers_step.py --out "$OUT" "$@" 2>&1 | tee "$OUT/peers_step.log"
rc=$?
echo "peers_step rc=$rc"
exit $rc
