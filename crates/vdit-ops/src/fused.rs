//! [`FusedBackend`]: the element-wise / normalisation chains of the denoiser blocks as
//! single operations.
//!
//! | operation | what | used by |
//! |---|---|---|
//! | [`FusedBackend::layer_norm_modulated`] | f32 LayerNorm (optional affine), then `* (1 + scale) + shift` | Wan `norm1`/`norm2`/`norm3`, HunyuanVideo and CogVideoX adaLN |
//! | [`FusedBackend::gated_residual`] | `x + y * gate` | every block's residual adds |
//! | [`FusedBackend::qk_norm_rope`] | q/k RMSNorm or LayerNorm, head split, interleaved RoPE | the three self-attentions |
//!
//! The provided bodies ([`burn_layer_norm_modulated`], [`burn_gated_residual`],
//! [`burn_qk_norm_rope`]) are the exact Burn compositions the models used before this
//! trait existed: same operations in the same order, so burn-flex results and the
//! diffusers parity fixtures do not move. The unfused CubeCL backends
//! (`burn_cubecl::CubeBackend<R, F, I, BT>`, every runtime) override them with one launch
//! each of [`vdit_kernels::fused`]; a call the kernels refuse (a dtype the device cannot
//! store, sizes past 32-bit indexing) runs the provided composition instead.
//!
//! Numerics of the kernels against the compositions: the same f32 formulas, with
//! reductions summed in a different order (a tree over up to 256 lanes instead of Burn's
//! `mean_dim`), so f32 results differ in the last bits (about 1e-6 relative) and f16/bf16
//! results can differ by one unit in the last place where a value sits next to a rounding
//! boundary.

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor};

/// Arithmetic of a modulation (`* (1 + scale) + shift`) or a gate (`x + y * gate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ModMath {
    /// In f32 with one cast to the output dtype at the end (Wan: its modulation table and
    /// gates are f32).
    F32,
    /// In the output (model) dtype: the normalised value is cast to it first and every
    /// operation rounds to it (HunyuanVideo, CogVideoX: diffusers modulates model-dtype
    /// tensors). Modulation and gate tensors then have the model dtype.
    OutDtype,
}

/// LayerNorm parameters: optional affine `weight` and `bias` `[dim]` (any float dtype;
/// used in f32) and `eps`.
#[derive(Debug)]
pub struct LayerNormParams<'a, B: Backend> {
    /// Affine scale.
    pub weight: Option<&'a Tensor<B, 1>>,
    /// Affine shift (only with a weight).
    pub bias: Option<&'a Tensor<B, 1>>,
    /// Epsilon added to the variance.
    pub eps: f64,
}

/// A modulation `* (1 + scale) + shift` with `scale`, `shift` `[batch, 1, dim]`.
#[derive(Debug)]
pub struct Modulate<'a, B: Backend> {
    /// Added after the scaling.
    pub shift: &'a Tensor<B, 3>,
    /// `1 + scale` multiplies the normalised value.
    pub scale: &'a Tensor<B, 3>,
    /// Arithmetic.
    pub math: ModMath,
}

/// The q/k normalisation of one of the three models.
#[derive(Debug)]
pub enum QkNorm<'a, B: Backend> {
    /// RMSNorm over the whole hidden size before the head split, weight `[heads *
    /// head_dim]` (Wan's `norm_q`/`norm_k`).
    RmsHidden {
        /// Scale.
        weight: &'a Tensor<B, 1>,
        /// Epsilon.
        eps: f64,
    },
    /// RMSNorm over each head, weight `[head_dim]` (HunyuanVideo).
    RmsHead {
        /// Scale.
        weight: &'a Tensor<B, 1>,
        /// Epsilon.
        eps: f64,
    },
    /// Affine LayerNorm over each head, computed in f32 (CogVideoX).
    LayerHead {
        /// Scale `[head_dim]`.
        weight: &'a Tensor<B, 1>,
        /// Shift `[head_dim]`.
        bias: Option<&'a Tensor<B, 1>>,
        /// Epsilon.
        eps: f64,
    },
}

/// Interleaved-pair RoPE on tokens `start..start + cos.dims()[0]` with f32 tables
/// `cos`, `sin` `[rotated tokens, head_dim / 2]`.
#[derive(Debug)]
pub struct Rope<'a, B: Backend> {
    /// First rotated token (CogVideoX: the text length; 0 otherwise).
    pub start: usize,
    /// Cosines.
    pub cos: &'a Tensor<B, 2>,
    /// Sines.
    pub sin: &'a Tensor<B, 2>,
}

/// A Burn backend with the fused element-wise / normalisation operations of the blocks.
pub trait FusedBackend: Backend {
    /// `cast(LN(x) [* weight] [+ bias], modulated, out_dtype)` with the LayerNorm in f32
    /// (mean, then the variance of the centred values).
    ///
    /// # Shapes
    /// `x` `[batch, tokens, dim]`; modulation tensors `[batch, 1, dim]`; returns
    /// `[batch, tokens, dim]` in `out_dtype`.
    fn layer_norm_modulated(
        x: Tensor<Self, 3>,
        norm: LayerNormParams<'_, Self>,
        modulation: Option<Modulate<'_, Self>>,
        out_dtype: DType,
    ) -> Tensor<Self, 3> {
        burn_layer_norm_modulated(x, norm, modulation, out_dtype)
    }

    /// `x + y * gate` with `gate` `[batch, 1, dim]` broadcast over the tokens, returned in
    /// `x`'s dtype ([`ModMath::F32`]: in f32, rounded once; [`ModMath::OutDtype`]: in the
    /// model dtype).
    ///
    /// # Shapes
    /// `x`, `y` `[batch, tokens, dim]`.
    fn gated_residual(
        x: Tensor<Self, 3>,
        y: Tensor<Self, 3>,
        gate: &Tensor<Self, 3>,
        math: ModMath,
    ) -> Tensor<Self, 3> {
        burn_gated_residual(x, y, gate, math)
    }

    /// q or k: the model's normalisation (computed in f32, cast back to `x`'s dtype), the
    /// head split and, if given, RoPE on a token range.
    ///
    /// # Shapes
    /// `x` `[batch, tokens, heads * head_dim]` -> `[batch, heads, tokens, head_dim]`.
    fn qk_norm_rope(
        x: Tensor<Self, 3>,
        heads: usize,
        norm: QkNorm<'_, Self>,
        rope: Option<Rope<'_, Self>>,
    ) -> Tensor<Self, 4> {
        burn_qk_norm_rope(x, heads, norm, rope)
    }
}

#[cfg(feature = "flex")]
impl FusedBackend for burn::backend::Flex {}

fn to_dtype<B: Backend, const D: usize>(x: Tensor<B, D>, dtype: DType) -> Tensor<B, D> {
    if x.dtype() == dtype { x } else { x.cast(dtype) }
}

fn to_f32<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    to_dtype(x, DType::F32)
}

/// `vdit_models::nn::LayerNorm32::forward_f32`: f32 mean, centred values, their mean
/// square, `centred * (var + eps).sqrt().recip()`, then the affine parameters.
fn layer_norm_f32<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    weight: Option<&Tensor<B, 1>>,
    bias: Option<&Tensor<B, 1>>,
    eps: f64,
) -> Tensor<B, D> {
    let x = to_f32(x);
    let mean = x.clone().mean_dim(D - 1);
    let centred = x - mean;
    let var = centred.clone().square().mean_dim(D - 1);
    let mut y = centred * (var + eps).sqrt().recip();
    if let Some(w) = weight {
        y = y * to_f32(w.clone()).unsqueeze();
    }
    if let Some(b) = bias {
        y = y + to_f32(b.clone()).unsqueeze();
    }
    y
}

/// `vdit_models::nn::RmsNorm32::forward`: `x * (mean(x^2) + eps).sqrt().recip() * weight`
/// in f32, cast back to `x`'s dtype.
fn rms_norm<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    weight: &Tensor<B, 1>,
    eps: f64,
) -> Tensor<B, D> {
    let dtype = x.dtype();
    let x = to_f32(x);
    let ms = x.clone().square().mean_dim(D - 1);
    let y = x * (ms + eps).sqrt().recip() * to_f32(weight.clone()).unsqueeze();
    to_dtype(y, dtype)
}

/// Interleaved (GPT-J) rotary embedding in Burn operations: `x * cos2 + swap(x) * sin2` in
/// f32 with per-feature tables, cast back (`x` `[batch, heads, tokens, head_dim]`, tables
/// `[tokens, head_dim / 2]`). `vdit_models::nn::rope::apply_interleaved` is this function.
pub fn apply_interleaved<B: Backend>(
    x: Tensor<B, 4>,
    cos: &Tensor<B, 2>,
    sin: &Tensor<B, 2>,
) -> Tensor<B, 4> {
    let dtype = x.dtype();
    let [b, h, n, d] = x.dims();
    let half = d / 2;
    let c = cos.clone().reshape([n, half, 1]);
    let s = sin.clone().reshape([n, half, 1]);
    let cos2: Tensor<B, 4> = Tensor::cat(vec![c.clone(), c], 2).reshape([1, 1, n, d]);
    let sin2: Tensor<B, 4> = Tensor::cat(vec![s.clone().neg(), s], 2).reshape([1, 1, n, d]);
    let x = to_f32(x);
    let swapped = x
        .clone()
        .reshape([b, h, n, half, 2])
        .flip([4])
        .reshape([b, h, n, d]);
    to_dtype(x * cos2 + swapped * sin2, dtype)
}

/// The provided body of [`FusedBackend::layer_norm_modulated`].
pub fn burn_layer_norm_modulated<B: Backend>(
    x: Tensor<B, 3>,
    norm: LayerNormParams<'_, B>,
    modulation: Option<Modulate<'_, B>>,
    out_dtype: DType,
) -> Tensor<B, 3> {
    let y = layer_norm_f32(x, norm.weight, norm.bias, norm.eps);
    match modulation {
        None => to_dtype(y, out_dtype),
        Some(m) => match m.math {
            ModMath::F32 => to_dtype(y * (m.scale.clone() + 1.0) + m.shift.clone(), out_dtype),
            ModMath::OutDtype => to_dtype(y, out_dtype) * (m.scale.clone() + 1.0) + m.shift.clone(),
        },
    }
}

/// The provided body of [`FusedBackend::gated_residual`].
pub fn burn_gated_residual<B: Backend>(
    x: Tensor<B, 3>,
    y: Tensor<B, 3>,
    gate: &Tensor<B, 3>,
    math: ModMath,
) -> Tensor<B, 3> {
    match math {
        ModMath::F32 => {
            let dtype = x.dtype();
            to_dtype(to_f32(x) + to_f32(y) * gate.clone(), dtype)
        }
        ModMath::OutDtype => x + y * gate.clone(),
    }
}

/// The provided body of [`FusedBackend::qk_norm_rope`].
pub fn burn_qk_norm_rope<B: Backend>(
    x: Tensor<B, 3>,
    heads: usize,
    norm: QkNorm<'_, B>,
    rope: Option<Rope<'_, B>>,
) -> Tensor<B, 4> {
    let [b, n, dim] = x.dims();
    let split = |t: Tensor<B, 3>| t.reshape([b, n, heads, dim / heads]);
    let y = match norm {
        QkNorm::RmsHidden { weight, eps } => split(rms_norm(x, weight, eps)).swap_dims(1, 2),
        QkNorm::RmsHead { weight, eps } => rms_norm(split(x), weight, eps).swap_dims(1, 2),
        QkNorm::LayerHead { weight, bias, eps } => {
            let dtype = x.dtype();
            to_dtype(
                layer_norm_f32(split(x).swap_dims(1, 2), Some(weight), bias, eps),
                dtype,
            )
        }
    };
    match rope {
        None => y,
        Some(r) if r.start == 0 && r.cos.dims()[0] == n => apply_interleaved(y, r.cos, r.sin),
        Some(r) => {
            let len = r.cos.dims()[0];
            let mut parts = Vec::with_capacity(3);
            if r.start > 0 {
                parts.push(y.clone().narrow(2, 0, r.start));
            }
            parts.push(apply_interleaved(
                y.clone().narrow(2, r.start, len),
                r.cos,
                r.sin,
            ));
            if r.start + len < n {
                parts.push(y.narrow(2, r.start + len, n - r.start - len));
            }
            Tensor::cat(parts, 2)
        }
    }
}

#[cfg(feature = "cube")]
mod cube {
    //! The CubeCL override: one launch of [`vdit_kernels::fused`] per call.

    use std::cell::Cell;

    use burn::tensor::{DType, Shape, Tensor, TensorPrimitive};
    use burn_cubecl::kernel::into_contiguous;
    use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
    use burn_cubecl::tensor::CubeTensor;
    use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement};
    use vdit_kernels::AttnDtype;
    use vdit_kernels::fused as k;

    use super::{
        FusedBackend, LayerNormParams, ModMath, Modulate, QkNorm, Rope, burn_gated_residual,
        burn_layer_norm_modulated, burn_qk_norm_rope,
    };

    thread_local! {
        static LAUNCHES: Cell<u64> = const { Cell::new(0) };
    }

    /// Fused kernels launched by [`FusedBackend`] calls on CubeCL backends from the
    /// calling thread (calls that fell back to the Burn composition do not count).
    pub fn fused_launch_count() -> u64 {
        LAUNCHES.with(|c| c.get())
    }

    fn launched() {
        LAUNCHES.with(|c| c.set(c.get() + 1));
    }

    fn elem(dt: DType) -> Option<AttnDtype> {
        match dt {
            DType::F32 => Some(AttnDtype::F32),
            DType::F16 => Some(AttnDtype::F16),
            DType::BF16 => Some(AttnDtype::BF16),
            _ => None,
        }
    }

    fn math(m: ModMath) -> k::ModMath {
        match m {
            ModMath::F32 => k::ModMath::F32,
            ModMath::OutDtype => k::ModMath::OutDtype,
        }
    }

    type Prim<R> = CubeTensor<R>;

    fn prim<B, R, const D: usize>(t: &Tensor<B, D>) -> Prim<R>
    where
        B: burn::tensor::backend::Backend<FloatTensorPrimitive = CubeTensor<R>>,
        R: CubeRuntime,
    {
        into_contiguous(t.clone().into_primitive().tensor())
    }

    fn wrap<B, R, const D: usize>(t: Prim<R>) -> Tensor<B, D>
    where
        B: burn::tensor::backend::Backend<FloatTensorPrimitive = CubeTensor<R>>,
        R: CubeRuntime,
    {
        Tensor::from_primitive(TensorPrimitive::Float(t))
    }

    impl<R, F, I, BT> FusedBackend for CubeBackend<R, F, I, BT>
    where
        R: CubeRuntime,
        F: FloatElement,
        I: IntElement,
        BT: BoolElement,
    {
        fn layer_norm_modulated(
            x: Tensor<Self, 3>,
            norm: LayerNormParams<'_, Self>,
            modulation: Option<Modulate<'_, Self>>,
            out_dtype: DType,
        ) -> Tensor<Self, 3> {
            match layer_norm::<R, F, I, BT>(&x, norm, modulation, out_dtype) {
                Some(t) => t,
                None => burn_layer_norm_modulated(x, norm, modulation, out_dtype),
            }
        }

        fn gated_residual(
            x: Tensor<Self, 3>,
            y: Tensor<Self, 3>,
            gate: &Tensor<Self, 3>,
            math: ModMath,
        ) -> Tensor<Self, 3> {
            match gated::<R, F, I, BT>(&x, &y, gate, math) {
                Some(t) => t,
                None => burn_gated_residual(x, y, gate, math),
            }
        }

        fn qk_norm_rope(
            x: Tensor<Self, 3>,
            heads: usize,
            norm: QkNorm<'_, Self>,
            rope: Option<Rope<'_, Self>>,
        ) -> Tensor<Self, 4> {
            match qk::<R, F, I, BT>(&x, heads, norm, rope) {
                Some(t) => t,
                None => burn_qk_norm_rope(x, heads, norm, rope),
            }
        }
    }

    /// `None`: the kernel refused the call (the caller runs the composition).
    fn layer_norm<R, F, I, BT>(
        x: &Tensor<CubeBackend<R, F, I, BT>, 3>,
        norm: LayerNormParams<'_, CubeBackend<R, F, I, BT>>,
        modulation: Option<Modulate<'_, CubeBackend<R, F, I, BT>>>,
        out_dtype: DType,
    ) -> Option<Tensor<CubeBackend<R, F, I, BT>, 3>>
    where
        R: CubeRuntime,
        F: FloatElement,
        I: IntElement,
        BT: BoolElement,
    {
        let [batch, tokens, dim] = x.dims();
        if norm.bias.is_some() && norm.weight.is_none() {
            return None;
        }
        if let Some(m) = modulation
            && (m.scale.dims() != [batch, 1, dim]
                || m.shift.dims() != [batch, 1, dim]
                || m.scale.dtype() != m.shift.dtype())
        {
            return None;
        }
        if norm.weight.is_some_and(|w| w.dims() != [dim])
            || norm.bias.is_some_and(|b| b.dims() != [dim])
            || norm
                .bias
                .is_some_and(|b| Some(b.dtype()) != norm.weight.map(|w| w.dtype()))
        {
            return None;
        }
        let xp: Prim<R> = prim(x);
        let problem = k::ModLayerNorm {
            batch,
            tokens,
            dim,
            eps: norm.eps as f32,
            x: elem(xp.dtype)?,
            out: elem(out_dtype)?,
            weight: match norm.weight {
                Some(w) => Some(elem(w.dtype())?),
                None => None,
            },
            bias: norm.bias.is_some(),
            modulation: match modulation {
                Some(m) => Some(k::Modulation {
                    dtype: elem(m.scale.dtype())?,
                    math: math(m.math),
                }),
                None => None,
            },
        };
        let w: Option<Prim<R>> = norm.weight.map(prim);
        let b: Option<Prim<R>> = norm.bias.map(prim);
        let sc: Option<Prim<R>> = modulation.map(|m| prim(m.scale));
        let sh: Option<Prim<R>> = modulation.map(|m| prim(m.shift));
        let out = empty_device_contiguous_dtype(
            xp.client.clone(),
            xp.device.clone(),
            Shape::new([batch, tokens, dim]),
            out_dtype,
        );
        k::launch_layer_norm(
            &xp.client,
            &problem,
            k::LayerNormBuffers {
                x: &xp.handle,
                out: &out.handle,
                weight: w.as_ref().map(|t| &t.handle),
                bias: b.as_ref().map(|t| &t.handle),
                scale: sc.as_ref().map(|t| &t.handle),
                shift: sh.as_ref().map(|t| &t.handle),
            },
        )
        .ok()?;
        launched();
        Some(wrap(out))
    }

    fn gated<R, F, I, BT>(
        x: &Tensor<CubeBackend<R, F, I, BT>, 3>,
        y: &Tensor<CubeBackend<R, F, I, BT>, 3>,
        gate: &Tensor<CubeBackend<R, F, I, BT>, 3>,
        m: ModMath,
    ) -> Option<Tensor<CubeBackend<R, F, I, BT>, 3>>
    where
        R: CubeRuntime,
        F: FloatElement,
        I: IntElement,
        BT: BoolElement,
    {
        let [batch, tokens, dim] = x.dims();
        if y.dims() != x.dims() || gate.dims() != [batch, 1, dim] || y.dtype() != x.dtype() {
            return None;
        }
        if m == ModMath::OutDtype && gate.dtype() != x.dtype() {
            return None;
        }
        let problem = k::GatedResidual {
            batch,
            tokens,
            dim,
            dtype: elem(x.dtype())?,
            gate: elem(gate.dtype())?,
            math: math(m),
        };
        let (xp, yp, gp): (Prim<R>, Prim<R>, Prim<R>) = (prim(x), prim(y), prim(gate));
        let out = empty_device_contiguous_dtype(
            xp.client.clone(),
            xp.device.clone(),
            Shape::new([batch, tokens, dim]),
            xp.dtype,
        );
        k::launch_gated_residual(
            &xp.client,
            &problem,
            k::GatedResidualBuffers {
                x: &xp.handle,
                y: &yp.handle,
                gate: &gp.handle,
                out: &out.handle,
            },
        )
        .ok()?;
        launched();
        Some(wrap(out))
    }

    fn qk<R, F, I, BT>(
        x: &Tensor<CubeBackend<R, F, I, BT>, 3>,
        heads: usize,
        norm: QkNorm<'_, CubeBackend<R, F, I, BT>>,
        rope: Option<Rope<'_, CubeBackend<R, F, I, BT>>>,
    ) -> Option<Tensor<CubeBackend<R, F, I, BT>, 4>>
    where
        R: CubeRuntime,
        F: FloatElement,
        I: IntElement,
        BT: BoolElement,
    {
        let [batch, tokens, dim] = x.dims();
        if heads == 0 || !dim.is_multiple_of(heads) {
            return None;
        }
        let head_dim = dim / heads;
        let (per_head, kind, weight, bias, eps) = match norm {
            QkNorm::RmsHidden { weight, eps } => (false, k::QkNormKind::Rms, weight, None, eps),
            QkNorm::RmsHead { weight, eps } => (true, k::QkNormKind::Rms, weight, None, eps),
            QkNorm::LayerHead { weight, bias, eps } => {
                (true, k::QkNormKind::Layer, weight, bias, eps)
            }
        };
        let wlen = if per_head { head_dim } else { dim };
        if weight.dims() != [wlen]
            || bias.is_some_and(|b| b.dims() != [wlen] || b.dtype() != weight.dtype())
        {
            return None;
        }
        let half = head_dim / 2;
        let span = match rope {
            Some(r) => {
                let len = r.cos.dims()[0];
                if r.cos.dims() != [len, half]
                    || r.sin.dims() != [len, half]
                    || r.cos.dtype() != DType::F32
                    || r.sin.dtype() != DType::F32
                {
                    return None;
                }
                Some(k::RopeSpan {
                    start: r.start,
                    len,
                })
            }
            None => None,
        };
        let dtype = elem(x.dtype())?;
        let mut problem = k::QkNormRope::new(
            batch,
            tokens,
            heads,
            head_dim,
            per_head,
            kind,
            eps as f32,
            dtype,
            elem(weight.dtype())?,
        );
        problem.bias = bias.is_some();
        problem.rope = span;
        let xp: Prim<R> = prim(x);
        let wp: Prim<R> = prim(weight);
        let bp: Option<Prim<R>> = bias.map(prim);
        let tables: Option<(Prim<R>, Prim<R>)> = rope.map(|r| (prim(r.cos), prim(r.sin)));
        let out = empty_device_contiguous_dtype(
            xp.client.clone(),
            xp.device.clone(),
            Shape::new([batch, heads, tokens, head_dim]),
            xp.dtype,
        );
        k::launch_qk_norm_rope(
            &xp.client,
            &problem,
            k::QkNormBuffers {
                x: &xp.handle,
                weight: &wp.handle,
                bias: bp.as_ref().map(|t| &t.handle),
                cos: tables.as_ref().map(|t| &t.0.handle),
                sin: tables.as_ref().map(|t| &t.1.handle),
                out: &out.handle,
            },
        )
        .ok()?;
        launched();
        Some(wrap(out))
    }
}

#[cfg(feature = "cube")]
pub use cube::fused_launch_count;

impl<B: Backend> Clone for LayerNormParams<'_, B> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<B: Backend> Copy for LayerNormParams<'_, B> {}

impl<B: Backend> Clone for Modulate<'_, B> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<B: Backend> Copy for Modulate<'_, B> {}

impl<B: Backend> Clone for QkNorm<'_, B> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<B: Backend> Copy for QkNorm<'_, B> {}

impl<B: Backend> Clone for Rope<'_, B> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<B: Backend> Copy for Rope<'_, B> {}
