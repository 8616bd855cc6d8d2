//! Input validation: every check that keeps the unchecked kernels in bounds.

use crate::{AttentionBuffers, DeviceLayer, KernelError, SparseAttention};
use cubecl::prelude::*;
use cubecl::server::Handle;

fn check_buffer(name: &'static str, h: &Handle, needed: usize) -> Result<(), KernelError> {
    let got = h.size_in_used();
    if got < needed as u64 {
        return Err(KernelError::Buffer {
            name,
            needed: needed as u64,
            got,
        });
    }
    Ok(())
}

pub(crate) fn validate<R: Runtime>(
    client: &ComputeClient<R>,
    layer: &DeviceLayer<R>,
    p: &SparseAttention,
    bufs: &AttentionBuffers<'_>,
) -> Result<(), KernelError> {
    p.validate()?;
    if p.heads != layer.meta.heads {
        return Err(KernelError::Shape {
            field: "heads",
            expected: layer.meta.heads,
            got: p.heads,
        });
    }
    if layer.meta.tokens != 0 && p.tokens != layer.meta.tokens {
        return Err(KernelError::Shape {
            field: "tokens",
            expected: layer.meta.tokens,
            got: p.tokens,
        });
    }
    if layer.meta.tokens != 0 && p.kv_tokens != layer.meta.kv_tokens {
        return Err(KernelError::Shape {
            field: "kv_tokens",
            expected: layer.meta.kv_tokens,
            got: p.kv_tokens,
        });
    }
    let f = client.features();
    if !f.supports_type(p.dtype.storage()) {
        return Err(KernelError::Dtype {
            dtype: p.dtype.name(),
            reason: "the device cannot store it".into(),
        });
    }
    let q_bytes = p.qkv_elems() * p.dtype.size();
    let kv_bytes = p.kv_elems() * p.dtype.size();
    for (name, h, bytes) in [
        ("q", bufs.q, q_bytes),
        ("k", bufs.k, kv_bytes),
        ("v", bufs.v, kv_bytes),
        ("out", bufs.out, q_bytes),
    ] {
        check_buffer(name, h, bytes)?;
    }
    match (p.key_padding, bufs.key_padding) {
        (Some(dt), Some(h)) => {
            if !f.supports_type(dt.storage()) {
                return Err(KernelError::Dtype {
                    dtype: "mask",
                    reason: format!("{dt:?} masks are not supported here"),
                });
            }
            check_buffer("key_padding", h, p.batch * p.kv_tokens * dt.size())?;
        }
        (None, None) => {}
        _ => {
            return Err(KernelError::Option(
                "key_padding buffer and problem.key_padding disagree".into(),
            ));
        }
    }
    match (p.want_lse, bufs.lse) {
        (true, Some(h)) => check_buffer("lse", h, p.batch * p.heads * p.tokens * 4)?,
        (false, None) => {}
        _ => {
            return Err(KernelError::Option(
                "lse buffer and problem.want_lse disagree".into(),
            ));
        }
    }
    Ok(())
}
