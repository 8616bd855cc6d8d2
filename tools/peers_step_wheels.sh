#!/usr/bin/env bash
# Downloads (on the CPU machine, from the package registry) the wheels that
# tools/device/peers_step.sh installs on the GPU machine, whose image has torch 2.11 /
# Python 3.12 but not diffusers. Into .whl/ (git-ignored; ~22 MiB; carried as `.whl`):
#   .whl/           diffusers and what the image lacks (importlib_metadata -> zipp,
#                   lazy_importer); always installed there
#   .whl/fallback/  diffusers' other dependencies (and huggingface_hub's), installed only
#                   where the image has no such distribution; pinned to the image's versions
#                   where known (huggingface_hub 1.33.0, safetensors 0.8.0). numpy is not
#                   carried (torch needs it; the image has 2.5.2).
# diffusers 0.42.1 is the version of /work/venv-fixtures (fixtures) and was checked to
# import with huggingface_hub 1.33.0 + transformers 5.17.0 (the image's versions).
# Usage: bash tools/peers_step_wheels.sh   (from the repository root)
set -eu
cd "$(git rev-parse --show-toplevel)"
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
PLAT=(--only-binary=:all: --no-deps --python-version 3.12 --implementation cp
      --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
mkdir -p .whl/fallback
python3 -m pip download -q "${PLAT[@]}" -d .whl \
  diffusers==0.42.1 importlib_metadata==10.2.0 zipp==4.1.2 lazy-importer==0.1.0
python3 -m pip download -q "${PLAT[@]}" -d .whl/fallback \
  huggingface_hub==1.33.0 httpx==0.28.1 httpcore==1.0.9 h11==0.16.0 anyio==4.16.0 \
  certifi==2026.10.18 idna==3.20 click==8.5.1 fsspec==2026.9.0 hf-xet==1.8.0 pyyaml==6.0.3 \
  tqdm==4.70.1 typing_extensions==4.16.0 packaging==26.3 filelock==4.2.12 \
  regex==2026.11.15 requests==2.34.2 urllib3==2.8.0 charset-normalizer==3.5.2 \
  safetensors==0.8.0 pillow==13.0.0
du -sh .whl
