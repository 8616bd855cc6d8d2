//! GPU path: [`SparseAttentionBackend`] for the unfused CubeCL backends
//! (`burn_cubecl::CubeBackend<R, F, I, BT>`: CUDA and wgpu), one kernel launch per layer.
//!
//! The fusion-wrapped `burn::backend::{Cuda, Wgpu}` types are not supported (they do not
//! implement the trait, so using them is a compile-time error): use the unfused
//! `CubeBackend` types, as the xtask commands do.

use std::sync::Arc;

use burn::tensor::{DType, Shape, Tensor, TensorPrimitive};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement};
use vdit_kernels::{AttentionBuffers, AttnDtype, DeviceLayer, MaskDtype, SparseAttention};

use crate::{
    AttentionError, AttentionOptions, AttentionOutput, PreparedCross, PreparedLayer,
    SparseAttentionBackend,
};

impl<R, F, I, BT> SparseAttentionBackend for CubeBackend<R, F, I, BT>
where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    const BUILTIN_DENSE: bool = false;

    fn sparse_attention(
        q: Tensor<Self, 4>,
        k: Tensor<Self, 4>,
        v: Tensor<Self, 4>,
        layer: &PreparedLayer,
        options: &AttentionOptions<Self>,
    ) -> Result<AttentionOutput<Self>, AttentionError> {
        run::<R, F, I, BT>(q, k, v, options, |client, key| {
            layer.device_cached(key, || {
                DeviceLayer::<R>::upload(client, layer.compiled())
                    .map_err(|e| AttentionError::Kernel(e.to_string()))
            })
        })
    }

    fn cross_attention(
        q: Tensor<Self, 4>,
        k: Tensor<Self, 4>,
        v: Tensor<Self, 4>,
        prepared: &PreparedCross,
        options: &AttentionOptions<Self>,
    ) -> Result<AttentionOutput<Self>, AttentionError> {
        let (heads, tokens, kv_tokens) =
            (prepared.heads(), prepared.tokens(), prepared.kv_tokens());
        run::<R, F, I, BT>(q, k, v, options, |client, key| {
            prepared.device_cached(key, || {
                DeviceLayer::<R>::dense_cross(client, heads, tokens, kv_tokens, CROSS_BLOCK)
                    .map_err(|e| AttentionError::Kernel(e.to_string()))
            })
        })
    }
}

/// Query tile of the cross-attention table: 64 rows, the tensor-core kernels' tile.
const CROSS_BLOCK: usize = 64;

/// One launch of the kernel on `layer()`'s device table (`q` `[batch, heads, tokens,
/// head_dim]`, `k`/`v` `[batch, heads, kv_tokens, head_dim]`, already shape-checked).
fn run<R, F, I, BT>(
    q: Tensor<CubeBackend<R, F, I, BT>, 4>,
    k: Tensor<CubeBackend<R, F, I, BT>, 4>,
    v: Tensor<CubeBackend<R, F, I, BT>, 4>,
    options: &AttentionOptions<CubeBackend<R, F, I, BT>>,
    layer: impl FnOnce(
        &vdit_kernels::cubecl::prelude::ComputeClient<R>,
        &str,
    ) -> Result<Arc<DeviceLayer<R>>, AttentionError>,
) -> Result<AttentionOutput<CubeBackend<R, F, I, BT>>, AttentionError>
where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    let [batch, heads, tokens, head_dim] = q.dims();
    let kv_tokens = k.dims()[2];
    let prim =
        |t: Tensor<CubeBackend<R, F, I, BT>, 4>| into_contiguous(t.into_primitive().tensor());
    let (q, k, v): (CubeTensor<R>, _, _) = (prim(q), prim(k), prim(v));
    let dtype = match q.dtype {
        DType::F32 => AttnDtype::F32,
        DType::F16 => AttnDtype::F16,
        DType::BF16 => AttnDtype::BF16,
        other => {
            return Err(AttentionError::Unsupported(format!(
                "sparse attention kernels take f32, f16 or bf16, not {other:?}"
            )));
        }
    };
    if k.dtype != q.dtype || v.dtype != q.dtype {
        return Err(AttentionError::Shape(format!(
            "q, k and v dtypes differ: {:?}, {:?}, {:?}",
            q.dtype, k.dtype, v.dtype
        )));
    }
    let client = q.client.clone();
    let device = q.device.clone();
    let device_layer = layer(&client, &format!("cubecl:{device:?}"))?;
    let pad: Option<CubeTensor<R>> = options
        .key_padding
        .clone()
        .map(|p| into_contiguous(p.into_primitive()));
    let mask_dtype = match &pad {
        None => None,
        Some(p) => Some(match p.dtype.size() {
            1 => MaskDtype::U8,
            4 => MaskDtype::U32,
            n => {
                return Err(AttentionError::Unsupported(format!(
                    "key padding with {n}-byte booleans"
                )));
            }
        }),
    };
    let out = empty_device_contiguous_dtype(
        client.clone(),
        device.clone(),
        Shape::new([batch, heads, tokens, head_dim]),
        q.dtype,
    );
    let lse = options.want_lse.then(|| {
        empty_device_contiguous_dtype(
            client.clone(),
            device.clone(),
            Shape::new([batch, heads, tokens]),
            DType::F32,
        )
    });
    let mut problem = SparseAttention::cross(batch, heads, tokens, kv_tokens, head_dim, dtype);
    problem.scale = options.scale.map(|s| s as f32);
    problem.key_padding = mask_dtype;
    problem.want_lse = options.want_lse;
    vdit_kernels::launch(
        &client,
        &device_layer,
        &problem,
        AttentionBuffers {
            q: &q.handle,
            k: &k.handle,
            v: &v.handle,
            out: &out.handle,
            key_padding: pad.as_ref().map(|p| &p.handle),
            lse: lse.as_ref().map(|l| &l.handle),
        },
    )
    .map_err(|e| AttentionError::Kernel(e.to_string()))?;
    let output = Tensor::from_primitive(TensorPrimitive::Float(out));
    let lse = lse.map(|l| {
        let t: Tensor<CubeBackend<R, F, I, BT>, 3> =
            Tensor::from_primitive(TensorPrimitive::Float(l));
        // The backend's float type may not be f32 (e.g. bf16 models): cast.
        t.cast(F::dtype())
    });
    Ok(AttentionOutput { output, lse })
}
