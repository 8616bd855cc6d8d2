//! Joint `[video | text]` attention (diffusers `Attention` with
//! `HunyuanVideoAttnProcessor2_0`) for the dual- and single-stream blocks.
//!
//! Q and K get RMSNorm per head (`norm_q`, `norm_k`, and `norm_added_q/k` for the text
//! stream of the dual blocks); RoPE rotates the video tokens only; text comes **after**
//! the video; padded text keys are hidden by a key-padding mask. The attention itself
//! goes through [`AttentionContext::self_attention`] (dense, or sparse on the video part
//! following a plan, with text rows and columns always computed).

use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Tensor};
use vdit_attention::AttentionContext;
use vdit_models::ModelBackend;
use vdit_models::nn::{Linear, RmsNorm32, to_dtype};
use vdit_models::{Result, Weights};
use vdit_ops::{QkNorm, Rope};

/// RoPE tables of the video tokens: `(cos, sin)` `[video tokens, head_dim/2]`, f32.
pub use vdit_models::nn::rope::RopeTables;

/// What every joint attention call needs besides its inputs.
#[derive(Debug, Clone)]
pub struct JointInputs<'a, B: Backend> {
    /// RoPE tables of the video tokens.
    pub rope: &'a RopeTables<B>,
    /// Key padding `[B, video + text]` (`true` = valid), `None` when all valid.
    pub key_padding: Option<Tensor<B, 2, Bool>>,
    /// Attention context (layout, plan, step).
    pub ctx: &'a AttentionContext,
}

/// One stream's Q/K/V projections with per-head RMSNorm on Q and K.
#[derive(Module, Debug)]
pub struct QkvProjection<B: Backend> {
    /// Q projection (`to_q` / `add_q_proj`).
    pub q: Linear<B>,
    /// K projection (`to_k` / `add_k_proj`).
    pub k: Linear<B>,
    /// V projection (`to_v` / `add_v_proj`).
    pub v: Linear<B>,
    /// RMSNorm over each head's Q (`norm_q` / `norm_added_q`).
    pub norm_q: RmsNorm32<B>,
    /// RMSNorm over each head's K (`norm_k` / `norm_added_k`).
    pub norm_k: RmsNorm32<B>,
    /// Heads.
    #[module(skip)]
    pub heads: usize,
}

impl<B: ModelBackend> QkvProjection<B> {
    /// Loads the video stream's `to_{q,k,v}` and `norm_{q,k}` under `w` (an `attn`).
    pub fn load_video(w: &Weights<B>, dim: usize, heads: usize, eps: f64) -> Result<Self> {
        Self::load_named(
            w,
            ["to_q", "to_k", "to_v", "norm_q", "norm_k"],
            dim,
            heads,
            eps,
        )
    }

    /// Loads the text stream's `add_{q,k,v}_proj` and `norm_added_{q,k}` under `w`.
    pub fn load_text(w: &Weights<B>, dim: usize, heads: usize, eps: f64) -> Result<Self> {
        Self::load_named(
            w,
            [
                "add_q_proj",
                "add_k_proj",
                "add_v_proj",
                "norm_added_q",
                "norm_added_k",
            ],
            dim,
            heads,
            eps,
        )
    }

    fn load_named(
        w: &Weights<B>,
        names: [&str; 5],
        dim: usize,
        heads: usize,
        eps: f64,
    ) -> Result<Self> {
        let d = dim / heads;
        Ok(QkvProjection {
            q: Linear::load(&w.pp(names[0]), dim, dim, true)?,
            k: Linear::load(&w.pp(names[1]), dim, dim, true)?,
            v: Linear::load(&w.pp(names[2]), dim, dim, true)?,
            norm_q: RmsNorm32::load(&w.pp(names[3]), d, eps)?,
            norm_k: RmsNorm32::load(&w.pp(names[4]), d, eps)?,
            heads,
        })
    }

    /// `[B, N, D]` -> normalised `(q, k, v)`, each `[B, heads, N, d]`; `rope` rotates the
    /// first `cos.dims()[0]` tokens of q and k (the video tokens: all of a dual-stream
    /// block's video stream, the head of a single-stream block's joint sequence).
    ///
    /// q and k: per-head RMSNorm, head split and RoPE in one launch each on CubeCL
    /// backends ([`vdit_ops::FusedBackend::qk_norm_rope`] with [`QkNorm::RmsHead`]).
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        rope_tables: Option<&RopeTables<B>>,
    ) -> [Tensor<B, 4>; 3] {
        let [b, n, dim] = x.dims();
        let h = self.heads;
        let rope = rope_tables.map(|(cos, sin)| Rope { start: 0, cos, sin });
        let norm_rope = |t: Tensor<B, 3>, norm: &RmsNorm32<B>| {
            let weight = norm.weight.val();
            let qk_norm = QkNorm::RmsHead {
                weight: &weight,
                eps: norm.eps,
            };
            B::qk_norm_rope(t, h, qk_norm, rope)
        };
        let q = norm_rope(self.q.forward(x.clone()), &self.norm_q);
        let k = norm_rope(self.k.forward(x.clone()), &self.norm_k);
        let v = self
            .v
            .forward(x)
            .reshape([b, n, h, dim / h])
            .swap_dims(1, 2);
        [q, k, v]
    }
}

/// `[B, heads, N, d] -> [B, N, heads*d]`.
pub fn merge_heads<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 3> {
    let [b, h, n, d] = x.dims();
    x.swap_dims(1, 2).reshape([b, n, h * d])
}

/// Attention over `[video | text]` through the context: concatenates the two streams'
/// q/k/v on the token axis, attends (layer `layer` of the plan) and returns the merged
/// output `[B, Nv + Nt, D]`.
pub fn joint_attention<B: ModelBackend>(
    video: [Tensor<B, 4>; 3],
    text: [Tensor<B, 4>; 3],
    inputs: &JointInputs<'_, B>,
    layer: usize,
) -> Result<Tensor<B, 3>> {
    let [qv, kv, vv] = video;
    let [qt, kt, vt] = text;
    let cat = |a, b| Tensor::cat(vec![a, b], 2);
    attend([cat(qv, qt), cat(kv, kt), cat(vv, vt)], inputs, layer)
}

/// Attention over q/k/v `[B, heads, Nv + Nt, d]` already in `[video | text]` order through
/// the context (layer `layer` of the plan); returns the merged output `[B, Nv + Nt, D]`.
fn attend<B: ModelBackend>(
    [q, k, v]: [Tensor<B, 4>; 3],
    inputs: &JointInputs<'_, B>,
    layer: usize,
) -> Result<Tensor<B, 3>> {
    let dtype = q.dtype();
    let out = inputs
        .ctx
        .self_attention::<B>(layer, q, k, v, inputs.key_padding.clone())?;
    // diffusers: `hidden_states.to(query.dtype)` (the CPU sparse path may return f32).
    Ok(merge_heads(to_dtype(out, dtype)))
}

/// The dual-stream blocks' `attn`: separate projections for video and text, joint
/// attention, separate output projections (`to_out.0`, `to_add_out`).
#[derive(Module, Debug)]
pub struct DualAttention<B: Backend> {
    /// Video stream: `to_{q,k,v}`, `norm_{q,k}`.
    pub video: QkvProjection<B>,
    /// Text stream: `add_{q,k,v}_proj`, `norm_added_{q,k}`.
    pub text: QkvProjection<B>,
    /// `to_out.0`.
    pub to_out: Linear<B>,
    /// `to_add_out`.
    pub to_add_out: Linear<B>,
}

impl<B: ModelBackend> DualAttention<B> {
    /// Loads `attn` (pass `w.pp("attn")`).
    pub fn load(w: &Weights<B>, dim: usize, heads: usize, eps: f64) -> Result<Self> {
        Ok(DualAttention {
            video: QkvProjection::load_video(w, dim, heads, eps)?,
            text: QkvProjection::load_text(w, dim, heads, eps)?,
            to_out: Linear::load(&w.pp("to_out").pp(0), dim, dim, true)?,
            to_add_out: Linear::load(&w.pp("to_add_out"), dim, dim, true)?,
        })
    }

    /// # Shapes
    /// `x`: `[B, Nv, D]` (modulated video), `c`: `[B, Nt, D]` (modulated text); returns
    /// the projected outputs `([B, Nv, D], [B, Nt, D])`.
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        c: Tensor<B, 3>,
        inputs: &JointInputs<'_, B>,
        layer: usize,
    ) -> Result<(Tensor<B, 3>, Tensor<B, 3>)>
    where
        B: ModelBackend,
    {
        let [_, nv, _] = x.dims();
        let [_, nt, _] = c.dims();
        let video = self.video.forward(x, Some(inputs.rope));
        let text = self.text.forward(c, None);
        let out = joint_attention(video, text, inputs, layer)?;
        let ov = self.to_out.forward(out.clone().narrow(1, 0, nv));
        let ot = self.to_add_out.forward(out.narrow(1, nv, nt));
        Ok((ov, ot))
    }
}

/// The single-stream blocks' `attn` (`pre_only`: shared `to_{q,k,v}` and `norm_{q,k}`,
/// no output projection).
#[derive(Module, Debug)]
pub struct SingleAttention<B: Backend> {
    /// `to_{q,k,v}`, `norm_{q,k}`.
    pub qkv: QkvProjection<B>,
}

impl<B: ModelBackend> SingleAttention<B> {
    /// Loads `attn` (pass `w.pp("attn")`).
    pub fn load(w: &Weights<B>, dim: usize, heads: usize, eps: f64) -> Result<Self> {
        Ok(SingleAttention {
            qkv: QkvProjection::load_video(w, dim, heads, eps)?,
        })
    }

    /// # Shapes
    /// `h`: `[B, Nv + Nt, D]` (modulated joint sequence, video first) with `video_tokens
    /// = Nv`; returns the attention output `[B, Nv + Nt, D]` (no projection).
    pub fn forward(
        &self,
        h: Tensor<B, 3>,
        video_tokens: usize,
        inputs: &JointInputs<'_, B>,
        layer: usize,
    ) -> Result<Tensor<B, 3>>
    where
        B: ModelBackend,
    {
        // One projection and one fused norm + RoPE per q/k over the joint sequence: the
        // per-head RMSNorm is per token, and RoPE covers the first `video_tokens` tokens.
        debug_assert_eq!(inputs.rope.0.dims()[0], video_tokens, "RoPE table rows");
        attend(self.qkv.forward(h, Some(inputs.rope)), inputs, layer)
    }
}
