//! [`Denoiser`]: what every denoiser of the workspace (Wan2.1, HunyuanVideo, CogVideoX1.5)
//! offers to code that does not know the model class: its plan dimensions, its
//! self-attention layout and context for a latent size, and one call on inputs under
//! diffusers' argument names.

use burn::tensor::{DType, Tensor};
use vdit_attention::AttentionContext;
use vdit_patterns::{Plan, VideoLayout};

use crate::io::TensorMap;
use crate::{ModelBackend, ModelClass, Result};

/// A video denoiser, object safe (`&dyn Denoiser<B>`). Each model crate implements it for
/// its transformer; the class-specific loops (`vdit_wan::pipeline::denoise`,
/// `vdit_hunyuan::denoise`, `vdit_cogvideox::pipeline::denoise`) take the concrete model.
pub trait Denoiser<B: ModelBackend> {
    /// The model class.
    fn class(&self) -> ModelClass;

    /// The model float dtype.
    fn dtype(&self) -> DType;

    /// Latent channels in.
    fn in_channels(&self) -> usize;

    /// Width of the text embeddings the model takes (`encoder_hidden_states`).
    fn text_dim(&self) -> usize;

    /// What a plan for this model must have: `(attention layers, heads, head dim)`
    /// (HunyuanVideo: dual-stream blocks first, then single-stream blocks).
    fn plan_dims(&self) -> (usize, usize, usize);

    /// The self-attention layout of latents `[frames, height, width]` with `text_len`
    /// text tokens (ignored by Wan2.1, whose self-attention is video only).
    ///
    /// # Errors
    /// Latent sizes the patch does not divide, a layout too large.
    fn video_layout(&self, latent: [usize; 3], text_len: usize) -> Result<VideoLayout>;

    /// The attention context of [`Denoiser::video_layout`]: dense without `plan`,
    /// otherwise the plan checked against [`Denoiser::plan_dims`] and compiled for the
    /// layout.
    ///
    /// # Errors
    /// As [`Denoiser::video_layout`]; a plan for another model.
    fn video_context(
        &self,
        latent: [usize; 3],
        text_len: usize,
        plan: Option<&Plan>,
    ) -> Result<AttentionContext> {
        let (layers, heads, head_dim) = self.plan_dims();
        crate::attention_context(
            self.video_layout(latent, text_len)?,
            plan,
            layers,
            heads,
            head_dim,
        )
    }

    /// One call with the inputs read from a tensor map under diffusers' argument names
    /// (`hidden_states`, `timestep`, `encoder_hidden_states`; HunyuanVideo also
    /// `encoder_attention_mask`, `pooled_projections`, `guidance`), dense or following
    /// `plan`; returns the model output (`sample`).
    ///
    /// # Errors
    /// Missing, unknown or wrongly shaped inputs; a plan for another model.
    fn forward_inputs(
        &self,
        inputs: &TensorMap,
        plan: Option<&Plan>,
        device: &B::Device,
    ) -> Result<Tensor<B, 5>>;
}
