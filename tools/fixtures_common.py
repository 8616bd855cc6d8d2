"""Shared helpers for the golden-fixture scripts (tools/fixtures_<model>.py).

Conventions (see tools/README.md):
  * Every script runs diffusers + torch on the CPU, in float32, deterministically, and
    writes under crates/vdit-<model>/tests/fixtures/<case>/:
      config.json                      diffusers save_pretrained output (with _class_name)
      diffusion_pytorch_model*.safetensors (+ .index.json when sharded)
      inputs.safetensors               forward kwargs under diffusers' argument names
      outputs.safetensors              the forward output under the key "sample"
  * A manifest.json at the fixture root records the diffusers/torch versions and cases.
  * Scripts take --out DIR (default: the crate's tests/fixtures) and are rerun with
    `cargo xtask fixtures --model <name>`.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def require_libs():
    """Imports torch, diffusers and safetensors or exits with a clear message."""
    try:
        import torch  # noqa: F401
        import diffusers  # noqa: F401
        import safetensors  # noqa: F401
    except ImportError as e:  # pragma: no cover - environment problem
        sys.exit(
            f"fixtures need torch, diffusers and safetensors ({e}). "
            "Use a venv with them, e.g. VDIT_PYTHON=/work/venv-fixtures/bin/python"
        )


def setup(seed: int = 0):
    """Deterministic single-threaded CPU torch in float32."""
    import torch

    torch.manual_seed(seed)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.set_default_dtype(torch.float32)


def fixture_root(model: str) -> Path:
    """crates/vdit-<model>/tests/fixtures."""
    return REPO_ROOT / "crates" / f"vdit-{model}" / "tests" / "fixtures"


def fresh_dir(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def perturb_parameters(model, seed: int, scale: float = 0.2):
    """Makes every parameter informative: norm scales become 1 + scale*N(0,1), norm
    biases scale*N(0,1) and every other parameter gets scale/4*N(0,1) added, so a bug
    that swaps or ignores a weight cannot hide behind default inits (ones/zeros)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g, dtype=torch.float32)
            if ".norm" in name or name.startswith("norm"):
                if name.endswith("weight"):
                    p.copy_(1.0 + scale * noise)
                else:
                    p.copy_(scale * noise)
            else:
                p.add_(scale / 4 * noise)


def save_model(model, out_dir: Path, max_shard_size: str | None = None, dtype=None):
    """save_pretrained in safetensors, optionally sharded / cast (e.g. torch.bfloat16)."""
    import torch

    kwargs = {"safe_serialization": True}
    if max_shard_size is not None:
        kwargs["max_shard_size"] = max_shard_size
    if dtype is not None and dtype != torch.float32:
        model = model.to(dtype)
    model.save_pretrained(str(out_dir), **kwargs)
    if dtype is not None and dtype != torch.float32:
        model.to(torch.float32)


def save_tensors(path: Path, tensors: dict, metadata: dict | None = None):
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous() for k, v in tensors.items()}, str(path), metadata=metadata)


def randn(shape, seed: int, dtype=None):
    import torch

    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=dtype or torch.float32)


def write_manifest(root: Path, cases: list[dict], extra: dict | None = None):
    import diffusers
    import torch

    manifest = {
        "generator": Path(sys.argv[0]).name,
        "diffusers": diffusers.__version__,
        "torch": torch.__version__,
        "cases": cases,
    }
    if extra:
        manifest.update(extra)
    (root / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")


def dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def default_out(model: str) -> str:
    return os.environ.get("VDIT_FIXTURES_OUT", str(fixture_root(model)))
