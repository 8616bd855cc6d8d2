//! `CogVideoXTransformer3DModel`: time embedding, patch + text embedding, N joint blocks,
//! `norm_final`, AdaLN output, unpatchify to `[B, F, C, H, W]`.

use std::path::Path;

use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor};
use vdit_attention::AttentionContext;
use vdit_models::ModelBackend;
use vdit_models::io::TensorMap;
use vdit_models::nn::rope::RopeCache;
use vdit_models::nn::{LayerNorm32, Linear, silu, to_dtype};
use vdit_models::{DiffusersConfig, ModelError, Result, Weights};
use vdit_patterns::{Plan, TextPosition, VideoLayout};

use crate::attention::RopeTables;
use crate::block::CogVideoXBlock;
use crate::embeddings::{PatchEmbed, TimeEmbed, rope_tables};
use crate::{CogVideoXConfig, CogVideoXConfigJson};

/// Checkpoint keys diffusers does not use for CogVideoX1.5 T2V (none: the sincos buffer
/// is not persistent).
pub const IGNORED_KEYS: &[&str] = &[];

/// The CogVideoX1.5 T2V denoiser (diffusers `CogVideoXTransformer3DModel`).
///
/// Unlike diffusers, the RoPE tables are computed inside the model from the latent
/// shape, exactly as `CogVideoXPipeline._prepare_rotary_positional_embeddings` does,
/// so a forward call needs only `hidden_states`, `timestep` and `encoder_hidden_states`.
#[derive(Module, Debug)]
pub struct CogVideoXTransformer3DModel<B: Backend> {
    /// `time_embedding`.
    pub time_embedding: TimeEmbed<B>,
    /// `patch_embed` (`proj`, `text_proj`).
    pub patch_embed: PatchEmbed<B>,
    /// `transformer_blocks.{i}`.
    pub transformer_blocks: Vec<CogVideoXBlock<B>>,
    /// `norm_final` (affine LayerNorm on the video tokens).
    pub norm_final: LayerNorm32<B>,
    /// `norm_out.linear`: `time_embed_dim -> 2D` (shift, scale).
    pub norm_out_linear: Linear<B>,
    /// `norm_out.norm` (affine LayerNorm).
    pub norm_out_norm: LayerNorm32<B>,
    /// `proj_out`: `D -> C_out*pt*p*p`, features ordered (c, pt, ph, pw).
    pub proj_out: Linear<B>,
    /// Runtime config.
    #[module(skip)]
    pub config: CogVideoXConfig,
    /// Model float dtype.
    #[module(skip)]
    pub dtype: DType,
    /// RoPE tables per layout ([`Self::rope_tables`]).
    #[module(skip)]
    pub rope_cache: RopeCache,
}

impl<B: ModelBackend> CogVideoXTransformer3DModel<B> {
    /// Loads a diffusers model directory (`config.json` + safetensors, single or
    /// sharded) into `dtype` (f32, bf16 or f16) on `device`.
    ///
    /// # Errors
    /// Unreadable or unsupported config, missing / unexpected / wrongly shaped weights
    /// (the error names the key).
    pub fn load(dir: &Path, dtype: DType, device: &B::Device) -> Result<Self> {
        let config = CogVideoXConfigJson::from_diffusers(&DiffusersConfig::from_model_dir(dir)?)?
            .into_config()?;
        let weights = Weights::from_model_dir(dir, dtype, device)?;
        Self::from_weights(&config, &weights)
    }

    /// The model with random weights (benchmarks without a checkpoint), e.g.
    /// `random(&CogVideoXConfig::cogvideox1_5_5b(), 0, DType::BF16, &device)`.
    pub fn random(
        config: &CogVideoXConfig,
        seed: u64,
        dtype: DType,
        device: &B::Device,
    ) -> Result<Self> {
        Self::from_weights(config, &Weights::random(seed, dtype, device)?)
    }

    /// Builds the model from `weights` (root prefix) and checks that every checkpoint
    /// key was used.
    pub fn from_weights(config: &CogVideoXConfig, weights: &Weights<B>) -> Result<Self> {
        let c = config;
        let d = c.dim;
        let blocks = (0..c.layers)
            .map(|i| CogVideoXBlock::load(&weights.pp("transformer_blocks").pp(i), c))
            .collect::<Result<Vec<_>>>()?;
        let patch = c.patch_size * c.patch_size * c.patch_size_t;
        let model = CogVideoXTransformer3DModel {
            time_embedding: TimeEmbed::load(&weights.pp("time_embedding"), c)?,
            patch_embed: PatchEmbed::load(&weights.pp("patch_embed"), c)?,
            transformer_blocks: blocks,
            norm_final: LayerNorm32::load(&weights.pp("norm_final"), d, c.norm_eps, true)?,
            norm_out_linear: Linear::load(
                &weights.pp("norm_out").pp("linear"),
                c.time_embed_dim,
                2 * d,
                true,
            )?,
            norm_out_norm: LayerNorm32::load(
                &weights.pp("norm_out").pp("norm"),
                d,
                c.norm_eps,
                true,
            )?,
            proj_out: Linear::load(&weights.pp("proj_out"), d, c.out_channels * patch, true)?,
            config: c.clone(),
            dtype: weights.dtype(),
            rope_cache: RopeCache::default(),
        };
        weights.finish(IGNORED_KEYS)?;
        Ok(model)
    }

    /// The joint self-attention layout for latents of `frames x height x width`
    /// (`[B, F, C, H, W]`) with `text` text tokens first.
    pub fn layout(
        &self,
        frames: usize,
        height: usize,
        width: usize,
        text: usize,
    ) -> Result<VideoLayout> {
        layout_for(&self.config, frames, height, width, text)
    }

    /// RoPE tables for a post-patch grid (f32, `[tokens, head_dim/2]`), built on the
    /// first call for a `(grid, device)` and then taken from [`Self::rope_cache`].
    pub fn rope_tables(&self, grid: [usize; 3], device: &B::Device) -> RopeTables<B> {
        self.rope_cache
            .get_or_build(grid, device, || self.build_rope_tables(grid, device))
    }

    /// [`Self::rope_tables`] without the cache: computed on the host and uploaded.
    pub fn build_rope_tables(&self, grid: [usize; 3], device: &B::Device) -> RopeTables<B> {
        rope_tables(&self.config, grid, device)
    }

    /// The attention context for latents `frames x height x width` with `text` text
    /// tokens: dense, or following `plan` (checked against this model's layers, heads
    /// and head dim, and compiled for the layout).
    pub fn attention_context(
        &self,
        frames: usize,
        height: usize,
        width: usize,
        text: usize,
        plan: Option<&Plan>,
    ) -> Result<AttentionContext> {
        let layout = self.layout(frames, height, width, text)?;
        let c = &self.config;
        vdit_models::attention_context(layout, plan, c.layers, c.heads, c.head_dim)
    }

    /// One denoiser call with the arguments read from a tensor file under diffusers'
    /// names (`hidden_states` `[B, F, C, H, W]`, `timestep` `[B]` or `[1]`,
    /// `encoder_hidden_states` `[B, L, text_dim]`; any int/float dtype), dense or
    /// following `plan`. `image_rotary_emb` is not an input: RoPE is computed here.
    pub fn forward_inputs(
        &self,
        inputs: &TensorMap,
        plan: Option<&Plan>,
        device: &B::Device,
    ) -> Result<Tensor<B, 5>>
    where
        B: ModelBackend,
    {
        for name in inputs.tensors.keys() {
            if !matches!(
                name.as_str(),
                "hidden_states" | "timestep" | "encoder_hidden_states"
            ) {
                return Err(ModelError::Input(format!(
                    "unsupported CogVideoX input `{name}` (expected hidden_states, timestep, encoder_hidden_states)"
                )));
            }
        }
        let hidden: Tensor<B, 5> = inputs.float("hidden_states", self.dtype, device)?;
        let text: Tensor<B, 3> = inputs.float("encoder_hidden_states", self.dtype, device)?;
        let timestep: Tensor<B, 1> = inputs.float("timestep", DType::F32, device)?;
        let [_, f, _, h, w] = hidden.dims();
        let ctx = self.attention_context(f, h, w, text.dims()[1], plan)?;
        self.forward(hidden, timestep, text, &ctx)
    }

    /// Checks that a forward of `batch` x `tokens` (text + video) fits the backend's
    /// tensor indexing: the widest activation is the FFN's `[batch, tokens, ffn_dim]`.
    ///
    /// # Errors
    /// [`ModelError::Input`] naming the size when it does not fit.
    pub fn check_size(&self, batch: usize, tokens: usize) -> Result<()>
    where
        B: ModelBackend,
    {
        vdit_models::check_tensor_elems::<B>(
            "the FFN activation",
            &[batch, tokens, self.config.ffn_dim],
        )
    }

    /// The denoiser: latents `[B, F, C_in, H, W]` (`F` a multiple of `patch_size_t`: the
    /// pipeline pads odd latent frame counts, see [`crate::pipeline::LatentFrames`]),
    /// timesteps `[B]` (or `[1]`, broadcast), text `[B, L, text_embed_dim]`, through
    /// the attention context `ctx` (whose layout must match). Returns the v-prediction
    /// `[B, F, C_out, H, W]` in the model dtype.
    ///
    /// # Errors
    /// [`ModelError::Input`] on shapes that do not fit the config or the context's
    /// layout; attention errors from the operator.
    pub fn forward(
        &self,
        hidden_states: Tensor<B, 5>,
        timestep: Tensor<B, 1>,
        encoder_hidden_states: Tensor<B, 3>,
        ctx: &AttentionContext,
    ) -> Result<Tensor<B, 5>>
    where
        B: ModelBackend,
    {
        let c = &self.config;
        let [b, f, ch, h, w] = hidden_states.dims();
        if ch != c.in_channels {
            return Err(ModelError::Input(format!(
                "hidden_states is [{b}, {f}, {ch}, {h}, {w}], expected {} channels in dim 2 ([B, F, C, H, W])",
                c.in_channels
            )));
        }
        let [tb, l, td] = encoder_hidden_states.dims();
        if tb != b || td != c.text_embed_dim || l == 0 {
            return Err(ModelError::Input(format!(
                "encoder_hidden_states is [{tb}, {l}, {td}], expected [{b}, L>0, {}]",
                c.text_embed_dim
            )));
        }
        let layout = self.layout(f, h, w, l)?;
        if ctx.layout() != &layout {
            return Err(ModelError::Input(format!(
                "attention context is for {:?}, the inputs need {layout:?}",
                ctx.layout()
            )));
        }
        self.check_size(b, layout.total_tokens())?;
        let t_host: Vec<f32> = timestep
            .into_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .map_err(|e| ModelError::Input(format!("timestep: {e:?}")))?;
        let timesteps = match t_host.len() {
            n if n == b => t_host,
            1 => vec![t_host[0]; b],
            n => {
                return Err(ModelError::Input(format!(
                    "timestep has {n} values for batch {b}"
                )));
            }
        };

        let device = hidden_states.device();
        let dtype = self.dtype;
        let (p, pt) = (c.patch_size, c.patch_size_t);
        let (tf, th, tw) = (f / pt, h / p, w / p);
        let rope = self.rope_tables([tf, th, tw], &device);

        let emb = self.time_embedding.forward(&timesteps, &device);
        let mut text = self
            .patch_embed
            .text(to_dtype(encoder_hidden_states, dtype));
        let mut video = self.patch_embed.video(to_dtype(hidden_states, dtype));
        for (i, block) in self.transformer_blocks.iter().enumerate() {
            (video, text) = block.forward(video, text, emb.clone(), &rope, ctx, i)?;
        }
        let video_dtype = video.dtype();
        let video = self.norm_final.forward_modulated(video, None, video_dtype);

        // norm_out (AdaLayerNorm, chunk_dim=1): shift, scale.
        let d = c.dim;
        let m = self.norm_out_linear.forward(silu(emb)).reshape([b, 2, d]);
        let shift = m.clone().narrow(1, 0, 1);
        let scale = m.narrow(1, 1, 1);
        let video = self.norm_out_norm.forward_adaln(video, &shift, &scale);
        let video = self.proj_out.forward(video);

        // Unpatchify: [B, T', H', W', C, pt, p, p] -> permute(0,1,5,4,2,6,3,7)
        // = [B, T', pt, C, H', p, W', p] -> [B, F, C, H, W].
        let co = c.out_channels;
        let x: Tensor<B, 8> = video.reshape([b, tf, th, tw, co, pt, p, p]);
        Ok(x.permute([0, 1, 5, 4, 2, 6, 3, 7])
            .reshape([b, f, co, h, w]))
    }
}

/// The joint self-attention layout of latents `frames x height x width` with `text`
/// text tokens first, under `config`.
///
/// # Errors
/// [`ModelError::Input`] when the latent size is not a positive multiple of the patch
/// (an odd latent frame count must be padded first, as the pipeline does), or `text`
/// is 0.
pub fn layout_for(
    config: &CogVideoXConfig,
    frames: usize,
    height: usize,
    width: usize,
    text: usize,
) -> Result<VideoLayout> {
    let (p, pt) = (config.patch_size, config.patch_size_t);
    if !frames.is_multiple_of(pt)
        || !height.is_multiple_of(p)
        || !width.is_multiple_of(p)
        || frames == 0
        || height == 0
        || width == 0
    {
        return Err(ModelError::Input(format!(
            "latent size {frames}x{height}x{width} is not a positive multiple of the patch size {pt}x{p}x{p} \
             (the pipeline pads odd latent frame counts: see pipeline::LatentFrames)"
        )));
    }
    VideoLayout::new(frames / pt, height / p, width / p)
        .and_then(|l| l.with_text(text, TextPosition::Prefix))
        .map_err(|e| ModelError::Input(e.to_string()))
}

impl<B: ModelBackend> vdit_models::Denoiser<B> for CogVideoXTransformer3DModel<B> {
    fn class(&self) -> vdit_models::ModelClass {
        vdit_models::ModelClass::CogVideoX
    }

    fn dtype(&self) -> DType {
        self.dtype
    }

    fn in_channels(&self) -> usize {
        self.config.in_channels
    }

    fn text_dim(&self) -> usize {
        self.config.text_embed_dim
    }

    fn plan_dims(&self) -> (usize, usize, usize) {
        (self.config.layers, self.config.heads, self.config.head_dim)
    }

    fn video_layout(&self, latent: [usize; 3], text_len: usize) -> Result<VideoLayout> {
        let [f, h, w] = latent;
        layout_for(&self.config, f, h, w, text_len)
    }

    fn forward_inputs(
        &self,
        inputs: &TensorMap,
        plan: Option<&Plan>,
        device: &B::Device,
    ) -> Result<Tensor<B, 5>> {
        CogVideoXTransformer3DModel::forward_inputs(self, inputs, plan, device)
    }
}
