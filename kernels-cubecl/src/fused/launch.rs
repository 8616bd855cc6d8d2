//! Problems, buffers, validation and the host launch functions of the fused kernels.

use super::ModMath;
use super::kernels::{gated_residual, mod_layer_norm, qk_norm_rope};
use crate::{AttnDtype, KernelError};
use cubecl::prelude::*;
use cubecl::server::Handle;

/// Units per cube of the row kernels (at most; fewer when the groups are short).
const ROW_UNITS: usize = 256;
/// Units per cube of the element-wise kernel.
const ELEM_UNITS: usize = 256;

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

fn check_dtype<R: Runtime>(client: &ComputeClient<R>, dt: AttnDtype) -> Result<(), KernelError> {
    if client.features().supports_type(dt.storage()) {
        Ok(())
    } else {
        Err(KernelError::Dtype {
            dtype: dt.name(),
            reason: "the device cannot store it".into(),
        })
    }
}

fn nonzero(field: &'static str, v: usize) -> Result<(), KernelError> {
    if v == 0 {
        return Err(KernelError::Shape {
            field,
            expected: 1,
            got: 0,
        });
    }
    Ok(())
}

fn fits_u32(what: &str, n: usize) -> Result<(), KernelError> {
    if n >= u32::MAX as usize {
        return Err(KernelError::Option(format!(
            "{what}: {n} elements exceed 32-bit indexing"
        )));
    }
    Ok(())
}

fn check_eps(eps: f32) -> Result<(), KernelError> {
    if !eps.is_finite() || eps < 0.0 {
        return Err(KernelError::Option(format!(
            "eps {eps} must be finite and >= 0"
        )));
    }
    Ok(())
}

/// Cube shape `(lanes per group, groups per cube)` for groups of `len` elements: a power of
/// two of lanes from 32 to 256 (about 4 elements each), groups filling 256 units.
fn row_shape(len: usize) -> (u32, u32) {
    let gx = len.div_ceil(4).next_power_of_two().clamp(32, ROW_UNITS);
    (gx as u32, (ROW_UNITS / gx) as u32)
}

/// A 2D grid of `cubes` cubes within the device limits (kernels use the linear
/// `CUBE_POS` and ignore the surplus of the last grid row).
fn grid<R: Runtime>(client: &ComputeClient<R>, cubes: usize) -> Result<CubeCount, KernelError> {
    let max = client.properties().hardware.max_cube_count;
    let x = cubes.min(max.0 as usize).max(1);
    let y = cubes.div_ceil(x);
    if y > max.1 as usize {
        return Err(KernelError::Grid(format!(
            "{cubes} cubes exceed the device limit {max:?}"
        )));
    }
    Ok(CubeCount::Static(x as u32, y as u32, 1))
}

/// The modulation of a [`ModLayerNorm`]: `* (1 + scale) + shift` with `scale` and `shift`
/// of shape `[batch, 1, dim]` (contiguous), broadcast over the tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Modulation {
    /// Element type of `scale` and `shift`.
    pub dtype: AttnDtype,
    /// Arithmetic of the modulation.
    pub math: ModMath,
}

/// A (modulated) LayerNorm over the last dimension of `x` `[batch, tokens, dim]`:
/// `out = cast(((x - mean) / sqrt(var + eps)) [* weight] [+ bias], then modulated)`, with
/// per-row f32 mean and (biased) variance.
#[derive(Debug, Clone, PartialEq)]
pub struct ModLayerNorm {
    /// Batch size (rows of `scale`/`shift`).
    pub batch: usize,
    /// Tokens per batch element.
    pub tokens: usize,
    /// Normalised size.
    pub dim: usize,
    /// Epsilon added to the variance.
    pub eps: f32,
    /// Element type of `x`.
    pub x: AttnDtype,
    /// Element type of `out`.
    pub out: AttnDtype,
    /// Element type of the affine `weight` `[dim]`, if any.
    pub weight: Option<AttnDtype>,
    /// Whether an affine `bias` `[dim]` (of the weight's dtype) is added; needs a weight.
    pub bias: bool,
    /// Modulation, if any.
    pub modulation: Option<Modulation>,
}

/// Device buffers of [`launch_layer_norm`]; optional ones must match the problem.
#[derive(Debug, Clone, Copy)]
pub struct LayerNormBuffers<'a> {
    /// Input `[batch, tokens, dim]`.
    pub x: &'a Handle,
    /// Output `[batch, tokens, dim]` (fully overwritten; may not alias `x`).
    pub out: &'a Handle,
    /// Affine weight `[dim]`.
    pub weight: Option<&'a Handle>,
    /// Affine bias `[dim]`.
    pub bias: Option<&'a Handle>,
    /// `scale` `[batch, 1, dim]`.
    pub scale: Option<&'a Handle>,
    /// `shift` `[batch, 1, dim]`.
    pub shift: Option<&'a Handle>,
}

fn present(name: &str, declared: bool, given: bool) -> Result<(), KernelError> {
    if declared != given {
        return Err(KernelError::Option(format!(
            "buffer {name} is {} but the problem {} it",
            if given { "given" } else { "missing" },
            if declared {
                "declares"
            } else {
                "does not declare"
            }
        )));
    }
    Ok(())
}

fn validate_layer_norm<R: Runtime>(
    client: &ComputeClient<R>,
    p: &ModLayerNorm,
    b: &LayerNormBuffers<'_>,
) -> Result<(), KernelError> {
    nonzero("batch", p.batch)?;
    nonzero("tokens", p.tokens)?;
    nonzero("dim", p.dim)?;
    check_eps(p.eps)?;
    let n = p.batch * p.tokens * p.dim;
    fits_u32("layer norm", n)?;
    if p.bias && p.weight.is_none() {
        return Err(KernelError::Option("a bias needs an affine weight".into()));
    }
    present("weight", p.weight.is_some(), b.weight.is_some())?;
    present("bias", p.bias, b.bias.is_some())?;
    present("scale", p.modulation.is_some(), b.scale.is_some())?;
    present("shift", p.modulation.is_some(), b.shift.is_some())?;
    check_dtype(client, p.x)?;
    check_dtype(client, p.out)?;
    check_buffer("x", b.x, n * p.x.size())?;
    check_buffer("out", b.out, n * p.out.size())?;
    if let (Some(dt), Some(w)) = (p.weight, b.weight) {
        check_dtype(client, dt)?;
        check_buffer("weight", w, p.dim * dt.size())?;
        if let Some(bias) = b.bias {
            check_buffer("bias", bias, p.dim * dt.size())?;
        }
    }
    if let (Some(m), Some(sc), Some(sh)) = (p.modulation, b.scale, b.shift) {
        check_dtype(client, m.dtype)?;
        check_buffer("scale", sc, p.batch * p.dim * m.dtype.size())?;
        check_buffer("shift", sh, p.batch * p.dim * m.dtype.size())?;
    }
    Ok(())
}

/// Runs a [`ModLayerNorm`] in one launch (asynchronous; device errors surface at the next
/// sync). Bad input returns a [`KernelError`] and launches nothing.
pub fn launch_layer_norm<R: Runtime>(
    client: &ComputeClient<R>,
    p: &ModLayerNorm,
    b: LayerNormBuffers<'_>,
) -> Result<(), KernelError> {
    validate_layer_norm(client, p, &b)?;
    let rows = p.batch * p.tokens;
    let (gx, gy) = row_shape(p.dim);
    let count = grid(client, rows.div_ceil(gy as usize))?;
    let n = rows * p.dim;
    // Absent optional buffers are replaced by `x` with `x`'s dtype; the kernel never reads
    // them (comptime flags).
    let w_dt = p.weight.unwrap_or(p.x);
    let s_dt = p.modulation.map_or(p.x, |m| m.dtype);
    let (w_h, w_len) = b.weight.map_or((b.x, 1), |h| (h, p.dim));
    let (bias_h, bias_len) = b.bias.map_or((b.x, 1), |h| (h, p.dim));
    let (sc_h, sc_len) = b.scale.map_or((b.x, 1), |h| (h, p.batch * p.dim));
    let (sh_h, sh_len) = b.shift.map_or((b.x, 1), |h| (h, p.batch * p.dim));
    // SAFETY: every buffer length was validated above; the kernel reads x/out below
    // `rows * dim`, weight/bias below `dim` and scale/shift below `batch * dim`, and only
    // reads the optional buffers whose comptime flag is set.
    unsafe {
        let arr = |h: &Handle, len: usize| ArrayArg::from_raw_parts(h.clone(), len);
        mod_layer_norm::launch_unchecked::<R>(
            client,
            count,
            CubeDim::new_2d(gx, gy),
            arr(b.x, n),
            arr(w_h, w_len),
            arr(bias_h, bias_len),
            arr(sh_h, sh_len),
            arr(sc_h, sc_len),
            arr(b.out, n),
            rows as u32,
            p.tokens as u32,
            p.dim as u32,
            p.dim as u32,
            p.eps,
            gx,
            gy,
            p.weight.is_some(),
            p.bias,
            p.modulation.is_some(),
            p.modulation.is_some_and(|m| m.math == ModMath::OutDtype),
            [
                p.x.storage(),
                p.out.storage(),
                s_dt.storage(),
                w_dt.storage(),
            ],
        )
    }
    Ok(())
}

/// `out = cast(x + y * gate)` over `[batch, tokens, dim]` with `gate` `[batch, 1, dim]`
/// broadcast over the tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct GatedResidual {
    /// Batch size.
    pub batch: usize,
    /// Tokens per batch element.
    pub tokens: usize,
    /// Hidden size.
    pub dim: usize,
    /// Element type of `x`, `y` and `out`.
    pub dtype: AttnDtype,
    /// Element type of `gate`.
    pub gate: AttnDtype,
    /// Arithmetic: [`ModMath::F32`] rounds once, [`ModMath::OutDtype`] rounds the product
    /// and then the sum.
    pub math: ModMath,
}

/// Device buffers of [`launch_gated_residual`].
#[derive(Debug, Clone, Copy)]
pub struct GatedResidualBuffers<'a> {
    /// Residual stream `[batch, tokens, dim]`.
    pub x: &'a Handle,
    /// Branch output `[batch, tokens, dim]`.
    pub y: &'a Handle,
    /// Gate `[batch, 1, dim]`.
    pub gate: &'a Handle,
    /// Output `[batch, tokens, dim]` (must not alias the inputs).
    pub out: &'a Handle,
}

/// Runs a [`GatedResidual`] in one launch. Bad input returns a [`KernelError`] and
/// launches nothing.
pub fn launch_gated_residual<R: Runtime>(
    client: &ComputeClient<R>,
    p: &GatedResidual,
    b: GatedResidualBuffers<'_>,
) -> Result<(), KernelError> {
    nonzero("batch", p.batch)?;
    nonzero("tokens", p.tokens)?;
    nonzero("dim", p.dim)?;
    let n = p.batch * p.tokens * p.dim;
    fits_u32("gated residual", n)?;
    check_dtype(client, p.dtype)?;
    check_dtype(client, p.gate)?;
    check_buffer("x", b.x, n * p.dtype.size())?;
    check_buffer("y", b.y, n * p.dtype.size())?;
    check_buffer("out", b.out, n * p.dtype.size())?;
    check_buffer("gate", b.gate, p.batch * p.dim * p.gate.size())?;
    let count = grid(client, n.div_ceil(ELEM_UNITS))?;
    // SAFETY: lengths validated above; the kernel guards `i < len` and reads the gate at
    // `b * dim + j < batch * dim`.
    unsafe {
        let arr = |h: &Handle, len: usize| ArrayArg::from_raw_parts(h.clone(), len);
        gated_residual::launch_unchecked::<R>(
            client,
            count,
            CubeDim::new_1d(ELEM_UNITS as u32),
            arr(b.x, n),
            arr(b.y, n),
            arr(b.gate, p.batch * p.dim),
            arr(b.out, n),
            n as u32,
            (p.tokens * p.dim) as u32,
            p.dim as u32,
            p.dim as u32,
            ELEM_UNITS as u32,
            p.math == ModMath::OutDtype,
            [p.dtype.storage(), p.gate.storage()],
        )
    }
    Ok(())
}

/// The normalisation of a [`QkNormRope`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QkNormKind {
    /// `x * rsqrt(mean(x^2) + eps) * weight` (Wan over the hidden size, HunyuanVideo per
    /// head).
    Rms,
    /// `(x - mean) * rsqrt(var + eps) * weight [+ bias]` (CogVideoX per head).
    Layer,
}

/// Tokens `[start, start + len)` of the input are rotated with table rows `0..len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RopeSpan {
    /// First rotated token.
    pub start: usize,
    /// Rotated tokens (rows of the `cos`/`sin` tables `[len, head_dim / 2]`, f32).
    pub len: usize,
}

/// q or k normalisation then RoPE: input `x` `[batch, tokens, heads * head_dim]` (the
/// projection output), normalised in f32 over the whole row (`per_head = false`) or over
/// each head (`per_head = true`), rounded to `dtype`, rotated on interleaved pairs
/// (`out[2k] = y[2k] cos - y[2k+1] sin`, `out[2k+1] = y[2k+1] cos + y[2k] sin`) for the
/// tokens of `rope`, and written to `out` `[batch, heads, out_tokens, head_dim]` at token
/// `out_offset + n` (so two streams can fill one joint buffer).
#[derive(Debug, Clone, PartialEq)]
pub struct QkNormRope {
    /// Batch size.
    pub batch: usize,
    /// Tokens of `x`.
    pub tokens: usize,
    /// Heads.
    pub heads: usize,
    /// Head dimension (even).
    pub head_dim: usize,
    /// Normalise each head separately (weight `[head_dim]`) instead of the whole row
    /// (weight `[heads * head_dim]`).
    pub per_head: bool,
    /// RMSNorm or LayerNorm.
    pub norm: QkNormKind,
    /// Epsilon.
    pub eps: f32,
    /// Element type of `x` and `out`.
    pub dtype: AttnDtype,
    /// Element type of the norm's weight (and bias).
    pub weight: AttnDtype,
    /// Whether the norm has a bias (LayerNorm only).
    pub bias: bool,
    /// Rotated tokens, if any.
    pub rope: Option<RopeSpan>,
    /// Tokens of `out` (at least `out_offset + tokens`).
    pub out_tokens: usize,
    /// Token offset of this input inside `out`.
    pub out_offset: usize,
}

impl QkNormRope {
    /// A problem writing `[batch, heads, tokens, head_dim]` (no offset), no bias, no RoPE.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        batch: usize,
        tokens: usize,
        heads: usize,
        head_dim: usize,
        per_head: bool,
        norm: QkNormKind,
        eps: f32,
        dtype: AttnDtype,
        weight: AttnDtype,
    ) -> Self {
        QkNormRope {
            batch,
            tokens,
            heads,
            head_dim,
            per_head,
            norm,
            eps,
            dtype,
            weight,
            bias: false,
            rope: None,
            out_tokens: tokens,
            out_offset: 0,
        }
    }

    fn weight_len(&self) -> usize {
        if self.per_head {
            self.head_dim
        } else {
            self.heads * self.head_dim
        }
    }
}

/// Device buffers of [`launch_qk_norm_rope`].
#[derive(Debug, Clone, Copy)]
pub struct QkNormBuffers<'a> {
    /// Input `[batch, tokens, heads * head_dim]`.
    pub x: &'a Handle,
    /// Norm weight (`[head_dim]` per head, else `[heads * head_dim]`).
    pub weight: &'a Handle,
    /// Norm bias (same shape), iff the problem declares one.
    pub bias: Option<&'a Handle>,
    /// RoPE `cos` `[rope.len, head_dim / 2]` f32, iff the problem has a RoPE span.
    pub cos: Option<&'a Handle>,
    /// RoPE `sin`, same shape.
    pub sin: Option<&'a Handle>,
    /// Output `[batch, heads, out_tokens, head_dim]`; only this input's tokens are written.
    pub out: &'a Handle,
}

fn validate_qk<R: Runtime>(
    client: &ComputeClient<R>,
    p: &QkNormRope,
    b: &QkNormBuffers<'_>,
) -> Result<(), KernelError> {
    nonzero("batch", p.batch)?;
    nonzero("tokens", p.tokens)?;
    nonzero("heads", p.heads)?;
    if p.head_dim == 0 || !p.head_dim.is_multiple_of(2) {
        return Err(KernelError::HeadDim {
            head_dim: p.head_dim,
            reason: "must be a positive even number (RoPE rotates pairs)".into(),
        });
    }
    check_eps(p.eps)?;
    if p.bias && p.norm != QkNormKind::Layer {
        return Err(KernelError::Option("only a LayerNorm has a bias".into()));
    }
    if p.out_offset + p.tokens > p.out_tokens {
        return Err(KernelError::Shape {
            field: "out_tokens",
            expected: p.out_offset + p.tokens,
            got: p.out_tokens,
        });
    }
    if let Some(r) = p.rope
        && r.start + r.len > p.tokens
    {
        return Err(KernelError::Shape {
            field: "rope span end",
            expected: p.tokens,
            got: r.start + r.len,
        });
    }
    let dim = p.heads * p.head_dim;
    let n_in = p.batch * p.tokens * dim;
    let n_out = p.batch * p.out_tokens * dim;
    fits_u32("q/k norm input", n_in)?;
    fits_u32("q/k norm output", n_out)?;
    present("bias", p.bias, b.bias.is_some())?;
    present("cos", p.rope.is_some(), b.cos.is_some())?;
    present("sin", p.rope.is_some(), b.sin.is_some())?;
    check_dtype(client, p.dtype)?;
    check_dtype(client, p.weight)?;
    check_buffer("x", b.x, n_in * p.dtype.size())?;
    check_buffer("out", b.out, n_out * p.dtype.size())?;
    check_buffer("weight", b.weight, p.weight_len() * p.weight.size())?;
    if let Some(bias) = b.bias {
        check_buffer("bias", bias, p.weight_len() * p.weight.size())?;
    }
    if let (Some(r), Some(c), Some(s)) = (p.rope, b.cos, b.sin) {
        let bytes = r.len * (p.head_dim / 2) * 4;
        check_buffer("cos", c, bytes)?;
        check_buffer("sin", s, bytes)?;
    }
    Ok(())
}

/// Runs a [`QkNormRope`] in one launch. Bad input returns a [`KernelError`] and launches
/// nothing.
pub fn launch_qk_norm_rope<R: Runtime>(
    client: &ComputeClient<R>,
    p: &QkNormRope,
    b: QkNormBuffers<'_>,
) -> Result<(), KernelError> {
    validate_qk(client, p, &b)?;
    let dim = p.heads * p.head_dim;
    let groups = if p.per_head {
        p.batch * p.tokens * p.heads
    } else {
        p.batch * p.tokens
    };
    let (gx, gy) = row_shape(p.weight_len());
    let count = grid(client, groups.div_ceil(gy as usize))?;
    let n_in = p.batch * p.tokens * dim;
    let n_out = p.batch * p.out_tokens * dim;
    let table = p.rope.map_or(1, |r| (r.len * p.head_dim / 2).max(1));
    let rope = p.rope.unwrap_or(RopeSpan { start: 0, len: 0 });
    // Absent tables are replaced by the weight buffer (never read: the span is empty);
    // its length is declared as one f32.
    let (cos, sin) = match (b.cos, b.sin) {
        (Some(c), Some(s)) => (c, s),
        _ => (b.weight, b.weight),
    };
    let tlen = if p.rope.is_some() { table } else { 1 };
    let (bias_h, bias_len) = b.bias.map_or((b.weight, 1), |h| (h, p.weight_len()));
    // SAFETY: lengths validated above. The kernel reads x below `batch*tokens*dim`, the
    // weight/bias below `weight_len`, the tables below `rope.len * head_dim/2` (only for
    // tokens inside the span) and writes out below `batch*out_tokens*dim` because
    // `out_offset + tokens <= out_tokens`.
    unsafe {
        let arr = |h: &Handle, len: usize| ArrayArg::from_raw_parts(h.clone(), len);
        qk_norm_rope::launch_unchecked::<R>(
            client,
            count,
            CubeDim::new_2d(gx, gy),
            arr(b.x, n_in),
            arr(b.weight, p.weight_len()),
            arr(bias_h, bias_len),
            arr(cos, tlen),
            arr(sin, tlen),
            arr(b.out, n_out),
            groups as u32,
            p.tokens as u32,
            p.heads as u32,
            p.head_dim as u32,
            p.out_tokens as u32,
            p.out_offset as u32,
            rope.start as u32,
            rope.len as u32,
            p.eps,
            gx,
            gy,
            p.per_head,
            p.norm == QkNormKind::Layer,
            p.bias,
            [p.dtype.storage(), p.weight.storage()],
        )
    }
    Ok(())
}
