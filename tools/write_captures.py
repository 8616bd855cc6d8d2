#!/usr/bin/env python3
"""Write Sparse-vDiT capture files from PyTorch or NumPy.

A capture file holds the self-attention Q/K/V of chosen denoising steps and layers, so
that `cargo xtask search --captures FILE...` can search a sparse attention plan for a
model that was never ported to Rust. Format (SPEC "Capture file"): safetensors with

    q.{step}.{layer}, k.{step}.{layer}, v.{step}.{layer}   shape [heads, tokens, head_dim]

(f32, f16 or bf16; batch 1; step and layer zero-based) and string metadata `frames`,
`height`, `width` (post-patch latent tokens), `text_tokens`, `text_position`
(prefix|suffix|none) and `model`. Every captured step must hold every layer 0..N-1.
Use one file per sample (prompt/seed); the search aggregates samples by the worst case.

Only NumPy is required (the safetensors container is written directly); torch tensors
are accepted too (bf16 included). Typical use inside a PyTorch attention processor:

    writer = CaptureWriter("sample0.safetensors", frames=21, height=30, width=52,
                           text_tokens=0, text_position="none", model="wan2.1-t2v-1.3b")
    # in the attention forward, q/k/v of shape [batch=1, heads, tokens, head_dim]:
    writer.add(step, layer, q[0], k[0], v[0])
    ...
    writer.save()

`python3 tools/write_captures.py --demo OUT.safetensors` writes a small deterministic
file (values q = 0.001*i, k = -0.001*i, v = 0.002*i over the flat index i, in f16) that
the Rust test suite reads back.
"""

import argparse
import json
import os
import struct
import sys
import tempfile

import numpy as np

_DTYPES = {"f32": ("F32", np.float32), "f16": ("F16", np.float16), "bf16": ("BF16", None)}


def _to_numpy(x):
    """A [heads, tokens, head_dim] array as float32 NumPy, from NumPy or torch."""
    if hasattr(x, "detach"):  # torch.Tensor, any dtype (bf16 has no NumPy twin)
        x = x.detach().to("cpu")
        if str(x.dtype) != "torch.float32":
            x = x.float()
        x = x.numpy()
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 4 and x.shape[0] == 1:
        x = x[0]
    if x.ndim != 3:
        raise ValueError(f"expected [heads, tokens, head_dim] (or batch 1), got shape {x.shape}")
    return np.ascontiguousarray(x)


def _encode(x, dtype):
    """Little-endian bytes of a float32 array in the file dtype."""
    name, np_dtype = _DTYPES[dtype]
    if dtype == "bf16":
        bits = x.astype("<f4").view("<u4")
        # Round to nearest even, as torch does.
        rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
        return name, rounded.astype("<u2").tobytes()
    return name, x.astype(np.dtype(np_dtype).newbyteorder("<")).tobytes()


class CaptureWriter:
    """Collects q/k/v per (step, layer) and writes one capture file atomically."""

    def __init__(self, path, frames, height, width, text_tokens=0, text_position="none",
                 model="unknown", dtype="f16"):
        if text_position not in ("prefix", "suffix", "none"):
            raise ValueError(f"text_position must be prefix, suffix or none, got {text_position!r}")
        if (text_position == "none") != (text_tokens == 0):
            raise ValueError("text_tokens must be 0 exactly when text_position is 'none'")
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {sorted(_DTYPES)}")
        self.path = path
        self.tokens = frames * height * width + text_tokens
        self.dtype = dtype
        self.metadata = {
            "frames": str(frames), "height": str(height), "width": str(width),
            "text_tokens": str(text_tokens), "text_position": text_position, "model": str(model),
        }
        self.tensors = {}
        self.shape = None

    def add(self, step, layer, q, k, v):
        """Records q, k, v ([heads, tokens, head_dim], or [1, heads, tokens, head_dim])."""
        for name, x in (("q", q), ("k", k), ("v", v)):
            x = _to_numpy(x)
            if x.shape[1] != self.tokens:
                raise ValueError(f"{name}.{step}.{layer}: {x.shape[1]} tokens, layout has {self.tokens}")
            if self.shape is not None and x.shape != self.shape:
                raise ValueError(f"{name}.{step}.{layer}: shape {x.shape} differs from {self.shape}")
            self.shape = x.shape
            self.tensors[f"{name}.{int(step)}.{int(layer)}"] = x

    def save(self):
        """Writes the file (temporary file + rename: never a partial file)."""
        header = {"__metadata__": self.metadata}
        chunks, offset = [], 0
        for name in sorted(self.tensors):
            dt, raw = _encode(self.tensors[name], self.dtype)
            header[name] = {"dtype": dt, "shape": list(self.tensors[name].shape),
                            "data_offsets": [offset, offset + len(raw)]}
            chunks.append(raw)
            offset += len(raw)
        head = json.dumps(header, separators=(",", ":")).encode()
        head += b" " * (-len(head) % 8)
        directory = os.path.dirname(os.path.abspath(self.path))
        fd, tmp = tempfile.mkstemp(dir=directory, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(struct.pack("<Q", len(head)))
                f.write(head)
                for c in chunks:
                    f.write(c)
                f.flush()
                os.fsync(f.fileno())
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
            os.replace(tmp, self.path)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise


def demo(path):
    """A small deterministic capture: 2 steps x 2 layers, 3 heads, 2x3x4 video + 5 text prefix."""
    frames, height, width, text, heads, head_dim = 2, 3, 4, 5, 3, 8
    w = CaptureWriter(path, frames, height, width, text, "prefix", model="python-demo", dtype="f16")
    n = heads * (frames * height * width + text) * head_dim
    i = np.arange(n, dtype=np.float32).reshape(heads, -1, head_dim)
    for step in (0, 7):
        for layer in (0, 1):
            w.add(step, layer, 0.001 * i, -0.001 * i, 0.002 * i)
    w.save()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--demo", metavar="OUT", help="write the small deterministic demo capture")
    args = p.parse_args(argv)
    if args.demo:
        demo(args.demo)
        print(f"wrote {args.demo}")
        return 0
    p.print_help()
    return 1


if __name__ == "__main__":
    sys.exit(main())
