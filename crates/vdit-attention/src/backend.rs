//! The backend extension trait and the entry point.

use burn::tensor::backend::Backend;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, Tensor, TensorData};
use vdit_patterns::VideoLayout;

use crate::cpu::{self, Dims};
use crate::{AttentionError, PreparedCross, PreparedLayer};

/// Options of one attention call.
#[derive(Debug, Clone)]
pub struct AttentionOptions<B: Backend> {
    /// Softmax scale; `None` means `1/sqrt(head_dim)`.
    pub scale: Option<f64>,
    /// Key-padding mask `[batch, tokens]`, `true` for valid keys (HunyuanVideo's padded
    /// text). Padded keys receive no attention weight.
    pub key_padding: Option<Tensor<B, 2, Bool>>,
    /// Also return the per-row log-sum-exp.
    pub want_lse: bool,
}

impl<B: Backend> Default for AttentionOptions<B> {
    fn default() -> Self {
        AttentionOptions {
            scale: None,
            key_padding: None,
            want_lse: false,
        }
    }
}

/// Result of an attention call.
#[derive(Debug, Clone)]
pub struct AttentionOutput<B: Backend> {
    /// `[batch, heads, tokens, head_dim]`.
    pub output: Tensor<B, 4>,
    /// `[batch, heads, tokens]` natural log-sum-exp of the scaled scores, when asked;
    /// `-inf` for rows that attend no key (their output is zero).
    pub lse: Option<Tensor<B, 3>>,
}

/// A Burn backend that can run plan-driven block-sparse attention.
///
/// The provided method is the CPU path (rayon, [`crate::cpu`]): it reads the tensors to
/// the host, so it suits CPU backends. GPU backends override it with a kernel launch.
pub trait SparseAttentionBackend: Backend {
    /// Whether dense attention without key padding or lse goes to Burn's own
    /// `attention` (true for CPU backends). CubeCL backends say `false`: burn-cubecl 0.21's
    /// attention runs (without its `autotune` feature) or benchmarks (with it) an unfused
    /// fallback that materialises the `L x L` scores (25.7 GB at 12 heads x 32,760 tokens
    /// in bf16), which fails at video sizes, so dense layers run on our kernels with a
    /// full block table instead.
    const BUILTIN_DENSE: bool = true;

    /// Runs one layer's block-sparse attention. Shapes are already checked against the
    /// layer and layout by [`attention`].
    fn sparse_attention(
        q: Tensor<Self, 4>,
        k: Tensor<Self, 4>,
        v: Tensor<Self, 4>,
        layer: &PreparedLayer,
        options: &AttentionOptions<Self>,
    ) -> Result<AttentionOutput<Self>, AttentionError> {
        cpu_sparse_attention(q, k, v, layer, options)
    }

    /// Runs dense cross-attention (queries and keys of different lengths; shapes already
    /// checked by [`cross_attention`]). The provided method is [`burn_cross_attention`];
    /// CubeCL backends override it with one launch of the flash kernel.
    fn cross_attention(
        q: Tensor<Self, 4>,
        k: Tensor<Self, 4>,
        v: Tensor<Self, 4>,
        prepared: &PreparedCross,
        options: &AttentionOptions<Self>,
    ) -> Result<AttentionOutput<Self>, AttentionError> {
        let _ = prepared;
        Ok(burn_cross_attention(q, k, v, options))
    }
}

#[cfg(feature = "flex")]
impl SparseAttentionBackend for burn::backend::Flex {}

/// The CPU path for any backend: host copies in, rayon block-sparse attention, host
/// copies out.
pub fn cpu_sparse_attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    layer: &PreparedLayer,
    options: &AttentionOptions<B>,
) -> Result<AttentionOutput<B>, AttentionError> {
    let [batch, heads, tokens, head_dim] = q.dims();
    let device = q.device();
    let dtype = q.dtype();
    let host = |t: Tensor<B, 4>| -> Result<Vec<f32>, AttentionError> {
        t.into_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .map_err(|e| AttentionError::Unsupported(format!("reading tensor to host: {e:?}")))
    };
    let (qh, kh, vh) = (host(q)?, host(k)?, host(v)?);
    let pad = match &options.key_padding {
        Some(p) => Some(
            p.clone()
                .into_data()
                .into_vec::<bool>()
                .map_err(|e| AttentionError::Unsupported(format!("reading key padding: {e:?}")))?,
        ),
        None => None,
    };
    let scale = options.scale.unwrap_or(1.0 / (head_dim as f64).sqrt()) as f32;
    let dims = Dims {
        batch,
        heads,
        tokens,
        head_dim,
    };
    let res = cpu::sparse_attention(&qh, &kh, &vh, dims, layer.compiled(), scale, pad.as_deref());
    // Built in f32 and cast, so the output has the input's dtype on every backend.
    let output = Tensor::<B, 4>::from_data(
        TensorData::new(res.out, [batch, heads, tokens, head_dim]),
        &device,
    )
    .cast(dtype);
    let lse = options.want_lse.then(|| {
        Tensor::<B, 3>::from_data(TensorData::new(res.lse, [batch, heads, tokens]), &device)
    });
    Ok(AttentionOutput { output, lse })
}

/// Self-attention of one layer: dense when `layer` is `None`, otherwise block-sparse
/// following the layer's compiled patterns.
///
/// # Shapes
/// `q`, `k`, `v`: `[batch, heads, tokens, head_dim]` with `tokens = layout.total_tokens()`;
/// `options.key_padding`: `[batch, tokens]`. Output as `q`; lse `[batch, heads, tokens]`.
///
/// # Errors
/// Mismatched shapes, a layer whose head count or layout differs from the call, or a
/// dtype/head dim the backend cannot run.
pub fn attention<B: SparseAttentionBackend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    layer: Option<&PreparedLayer>,
    layout: &VideoLayout,
    options: &AttentionOptions<B>,
) -> Result<AttentionOutput<B>, AttentionError> {
    let dims = q.dims();
    let [batch, heads, tokens, head_dim] = dims;
    if k.dims() != dims || v.dims() != dims {
        return Err(AttentionError::Shape(format!(
            "q {:?}, k {:?} and v {:?} must have the same shape [batch, heads, tokens, head_dim]",
            dims,
            k.dims(),
            v.dims()
        )));
    }
    if tokens != layout.total_tokens() {
        return Err(AttentionError::Shape(format!(
            "tensors have {tokens} tokens but the layout {}x{}x{} + {} text has {}",
            layout.frames,
            layout.height,
            layout.width,
            layout.text,
            layout.total_tokens()
        )));
    }
    if head_dim == 0 || batch == 0 || heads == 0 {
        return Err(AttentionError::Shape(format!(
            "empty dimension in {dims:?}"
        )));
    }
    if let Some(p) = &options.key_padding
        && p.dims() != [batch, tokens]
    {
        return Err(AttentionError::Shape(format!(
            "key padding is {:?}, expected [{batch}, {tokens}]",
            p.dims()
        )));
    }
    if let Some(layer) = layer {
        if layer.heads() != heads {
            return Err(AttentionError::Plan(format!(
                "layer plan has {} heads, tensors have {heads}",
                layer.heads()
            )));
        }
        if let Some(l) = layer.layout()
            && l != layout
        {
            return Err(AttentionError::Plan(format!(
                "layer was compiled for layout {l:?}, the call uses {layout:?}"
            )));
        }
    }
    let builtin = options.key_padding.is_none() && !options.want_lse && B::BUILTIN_DENSE;
    match layer {
        Some(layer) if !(layer.is_dense() && builtin) => {
            B::sparse_attention(q, k, v, layer, options)
        }
        None if !builtin => {
            let dense = PreparedLayer::dense(heads, layout, 64)?;
            B::sparse_attention(q, k, v, &dense, options)
        }
        _ => Ok(AttentionOutput {
            output: burn_dense(q, k, v, options.scale),
            lse: None,
        }),
    }
}

/// Dense cross-attention: every query row of `q` `[batch, heads, tokens, head_dim]`
/// attends to every valid key of `k`, `v` `[batch, heads, kv_tokens, head_dim]`.
///
/// `options.key_padding` is `[batch, kv_tokens]` (`true` = valid key); a row whose keys
/// are all padded outputs zeros (lse `-inf`). Runs on the backend's
/// [`SparseAttentionBackend::cross_attention`] (one flash-kernel launch on CubeCL
/// backends; device tables cached in `prepared`).
///
/// # Errors
/// Shapes that disagree with each other or with `prepared`, a dtype or head dim the
/// backend cannot run.
pub fn cross_attention<B: SparseAttentionBackend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    prepared: &PreparedCross,
    options: &AttentionOptions<B>,
) -> Result<AttentionOutput<B>, AttentionError> {
    let [batch, heads, tokens, head_dim] = q.dims();
    let [kb, kh, kv_tokens, kd] = k.dims();
    if [kb, kh, kd] != [batch, heads, head_dim] || v.dims() != k.dims() {
        return Err(AttentionError::Shape(format!(
            "cross-attention q {:?}, k {:?}, v {:?}: k and v must be [{batch}, {heads}, kv_tokens, {head_dim}]",
            q.dims(),
            k.dims(),
            v.dims()
        )));
    }
    if [heads, tokens, kv_tokens] != [prepared.heads(), prepared.tokens(), prepared.kv_tokens()] {
        return Err(AttentionError::Shape(format!(
            "cross-attention of {heads} heads, {tokens} x {kv_tokens} tokens does not match the prepared {prepared:?}"
        )));
    }
    if batch == 0 || head_dim == 0 {
        return Err(AttentionError::Shape(format!(
            "empty dimension in {:?}",
            q.dims()
        )));
    }
    if let Some(p) = &options.key_padding
        && p.dims() != [batch, kv_tokens]
    {
        return Err(AttentionError::Shape(format!(
            "key padding is {:?}, expected [{batch}, {kv_tokens}]",
            p.dims()
        )));
    }
    B::cross_attention(q, k, v, prepared, options)
}

/// Dense cross-attention in Burn operations (the default of
/// [`SparseAttentionBackend::cross_attention`]). Without key padding or lse it is Burn's
/// own `attention` (what the models called before this operator existed, so CPU results
/// do not move); otherwise an f32 composition (scores, masked max, exp, sums) that gives
/// padded rows zeros and lse `-inf`.
pub fn burn_cross_attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    options: &AttentionOptions<B>,
) -> AttentionOutput<B> {
    let [batch, heads, tokens, head_dim] = q.dims();
    let kv_tokens = k.dims()[2];
    if options.key_padding.is_none() && !options.want_lse {
        return AttentionOutput {
            output: burn_dense(q, k, v, options.scale),
            lse: None,
        };
    }
    let dtype = q.dtype();
    let f32 = |t: Tensor<B, 4>| t.cast(burn::tensor::DType::F32);
    let scale = options.scale.unwrap_or(1.0 / (head_dim as f64).sqrt());
    let mut s = f32(q).matmul(f32(k).swap_dims(2, 3)) * scale;
    let shape = [batch, heads, tokens, kv_tokens];
    if let Some(p) = &options.key_padding {
        let padded = p
            .clone()
            .bool_not()
            .reshape([batch, 1, 1, kv_tokens])
            .expand(shape);
        s = s.mask_fill(padded, f32::NEG_INFINITY);
    }
    let m = s.clone().max_dim(3);
    // Rows with every key padded have max -inf: shift them by 0 so exp gives zeros.
    let m_safe = m.clone().mask_fill(m.lower_elem(-f32::MAX), 0.0);
    let e = (s - m_safe.clone().expand(shape)).exp();
    let z = e.clone().sum_dim(3);
    let empty = z.clone().equal_elem(0.0);
    let out = e.matmul(f32(v)) / z.clone().mask_fill(empty.clone(), 1.0);
    let lse = options.want_lse.then(|| {
        (m_safe + z.log())
            .reshape([batch, heads, tokens])
            .mask_fill(
                empty.clone().reshape([batch, heads, tokens]),
                f32::NEG_INFINITY,
            )
    });
    AttentionOutput {
        output: out.cast(dtype),
        lse,
    }
}

/// Dense attention through Burn's own `attention` (NaN inputs propagated as PyTorch
/// does). Leaving the scale unset when it is the default keeps burn-cubecl on its
/// flash-attention path.
fn burn_dense<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    scale: Option<f64>,
) -> Tensor<B, 4> {
    let default_scale = 1.0 / (q.dims()[3] as f64).sqrt();
    let scale = scale.filter(|s| (s - default_scale).abs() > 1e-12 * default_scale);
    let output = burn::tensor::module::attention(
        q.clone(),
        k.clone(),
        v.clone(),
        None,
        None,
        AttentionModuleOptions {
            scale,
            ..Default::default()
        },
    );
    propagate_nan(output, q, k, v)
}

/// `output` with NaN wherever PyTorch's attention would produce NaN from a NaN in `q`, `k`
/// or `v`: every channel of a query row whose q has a NaN, every row of a head whose k
/// has a NaN (that key's score is NaN in every row), and every row of a channel whose v
/// has a NaN.
///
/// Burn's CPU attention (burn-flex 0.21) treats a row of NaN scores like a fully masked
/// row and returns zeros, so a NaN weight would silently become a finite, wrong output.
/// The check is a reduction over q, k and v; the masks are built only when one of them
/// holds a NaN.
fn propagate_nan<B: Backend>(
    output: Tensor<B, 4>,
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
) -> Tensor<B, 4> {
    let any = q
        .clone()
        .contains_nan()
        .bool_or(k.clone().contains_nan())
        .bool_or(v.clone().contains_nan());
    if !any.into_data().iter::<bool>().next().unwrap_or(false) {
        return output;
    }
    let shape = output.dims();
    let q_rows = q.is_nan().any_dim(3).expand(shape);
    let k_heads = k.is_nan().any_dim(3).any_dim(2).expand(shape);
    let v_cols = v.is_nan().any_dim(2).expand(shape);
    output.mask_fill(q_rows.bool_or(k_heads).bool_or(v_cols), f32::NAN)
}
