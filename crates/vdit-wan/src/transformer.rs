//! `WanTransformer3DModel`: patchify, condition, N blocks, modulated output, unpatchify.

use std::path::Path;

use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor};
use vdit_attention::AttentionContext;
use vdit_models::ModelBackend;
use vdit_models::io::TensorMap;
use vdit_models::nn::rope::{FreqPrecision, RopeCache, rope_3d};
use vdit_models::nn::{LayerNorm32, Linear, to_dtype, to_f32};
use vdit_models::{DiffusersConfig, Init, ModelError, Result, Weights};
use vdit_ops::{ModMath, Modulate};
use vdit_patterns::{Plan, VideoLayout};

use crate::attention::RopeTables;
use crate::block::WanBlock;
use crate::embeddings::{ConditionEmbedder, PatchEmbed};
use crate::{WanConfig, WanConfigJson};

/// Keys diffusers ignores when loading Wan (`_keys_to_ignore_on_load_unexpected`).
pub const IGNORED_KEYS: &[&str] = &["norm_added_q"];

/// The Wan2.1 T2V denoiser.
#[derive(Module, Debug)]
pub struct WanTransformer3DModel<B: Backend> {
    /// `patch_embedding`.
    pub patch_embedding: PatchEmbed<B>,
    /// `condition_embedder`.
    pub condition_embedder: ConditionEmbedder<B>,
    /// `blocks.{i}`.
    pub blocks: Vec<WanBlock<B>>,
    /// `norm_out` (no affine).
    pub norm_out: LayerNorm32<B>,
    /// `proj_out`: `D -> pt*ph*pw*C_out`, features ordered (pt, ph, pw, c).
    pub proj_out: Linear<B>,
    /// `scale_shift_table` `[1, 2, D]` (f32): shift, scale.
    pub scale_shift_table: Param<Tensor<B, 3>>,
    /// Runtime config.
    #[module(skip)]
    pub config: WanConfig,
    /// Model float dtype.
    #[module(skip)]
    pub dtype: DType,
    /// RoPE tables per layout ([`Self::rope_tables`]).
    #[module(skip)]
    pub rope_cache: RopeCache,
}

impl<B: ModelBackend> WanTransformer3DModel<B> {
    /// Loads a diffusers model directory (`config.json` + safetensors, single or
    /// sharded) into `dtype` (f32, bf16 or f16) on `device`.
    ///
    /// # Errors
    /// Unreadable or unsupported config, missing / unexpected / wrongly shaped weights
    /// (the error names the key).
    pub fn load(dir: &Path, dtype: DType, device: &B::Device) -> Result<Self> {
        let config =
            WanConfigJson::from_diffusers(&DiffusersConfig::from_model_dir(dir)?)?.into_config()?;
        let weights = Weights::from_model_dir(dir, dtype, device)?;
        Self::from_weights(&config, &weights)
    }

    /// The model with random weights (benchmarks without a checkpoint).
    pub fn random(config: &WanConfig, seed: u64, dtype: DType, device: &B::Device) -> Result<Self> {
        Self::from_weights(config, &Weights::random(seed, dtype, device)?)
    }

    /// Builds the model from `weights` (root prefix) and checks that every checkpoint
    /// key was used.
    pub fn from_weights(config: &WanConfig, weights: &Weights<B>) -> Result<Self> {
        let c = config;
        let d = c.dim;
        let [pt, ph, pw] = c.patch_size;
        let blocks = (0..c.layers)
            .map(|i| WanBlock::load(&weights.pp("blocks").pp(i), c))
            .collect::<Result<Vec<_>>>()?;
        let model = WanTransformer3DModel {
            patch_embedding: PatchEmbed::load(
                &weights.pp("patch_embedding"),
                c.in_channels,
                c.dim,
                c.patch_size,
            )?,
            condition_embedder: ConditionEmbedder::load(&weights.pp("condition_embedder"), c)?,
            blocks,
            norm_out: LayerNorm32::plain(d, c.eps),
            proj_out: Linear::load(
                &weights.pp("proj_out"),
                d,
                c.out_channels * pt * ph * pw,
                true,
            )?,
            scale_shift_table: Param::from_tensor(weights.get_f32(
                "scale_shift_table",
                [1, 2, d],
                Init::Normal(1.0 / (d as f64).sqrt()),
            )?),
            config: c.clone(),
            dtype: weights.dtype(),
            rope_cache: RopeCache::default(),
        };
        weights.finish(IGNORED_KEYS)?;
        Ok(model)
    }

    /// The post-patch token layout of latents `[B, C, frames, height, width]` (what the
    /// self-attention sees; no text).
    pub fn layout(&self, frames: usize, height: usize, width: usize) -> Result<VideoLayout> {
        layout_for(&self.config, frames, height, width)
    }

    /// RoPE tables for a post-patch grid (f32, `[tokens, head_dim/2]`), built on the
    /// first call for a `(grid, device)` and then taken from [`Self::rope_cache`].
    pub fn rope_tables(&self, grid: [usize; 3], device: &B::Device) -> RopeTables<B> {
        self.rope_cache
            .get_or_build(grid, device, || self.build_rope_tables(grid, device))
    }

    /// [`Self::rope_tables`] without the cache: computed on the host and uploaded.
    pub fn build_rope_tables(&self, grid: [usize; 3], device: &B::Device) -> RopeTables<B> {
        rope_3d(
            self.config.rope_axes,
            grid,
            self.config.rope_theta,
            FreqPrecision::F64,
            device,
        )
    }

    /// The attention context for latents of `frames x height x width`: dense, or
    /// following `plan` (checked against this model's layers, heads and head dim, and
    /// compiled for the layout).
    pub fn attention_context(
        &self,
        frames: usize,
        height: usize,
        width: usize,
        plan: Option<&Plan>,
    ) -> Result<AttentionContext> {
        let layout = self.layout(frames, height, width)?;
        let c = &self.config;
        vdit_models::attention_context(layout, plan, c.layers, c.heads, c.head_dim)
    }

    /// One denoiser call with the arguments read from a tensor file under diffusers'
    /// names (`hidden_states`, `timestep`, `encoder_hidden_states`; any int/float
    /// dtype), dense or following `plan`.
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
                    "unsupported Wan input `{name}` (expected hidden_states, timestep, encoder_hidden_states)"
                )));
            }
        }
        let hidden: Tensor<B, 5> = inputs.float("hidden_states", self.dtype, device)?;
        let text: Tensor<B, 3> = inputs.float("encoder_hidden_states", self.dtype, device)?;
        let timestep: Tensor<B, 1> = inputs.float("timestep", DType::F32, device)?;
        let [_, _, f, h, w] = hidden.dims();
        let ctx = self.attention_context(f, h, w, plan)?;
        self.forward(hidden, timestep, text, &ctx)
    }

    /// Checks that a forward of `batch` x `tokens` fits the backend's tensor indexing: the
    /// widest activation is the FFN's `[batch, tokens, ffn_dim]`.
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

    /// One denoiser call.
    ///
    /// `ctx` must carry the layout of these latents ([`Self::layout`]); with a plan,
    /// self-attention is sparse.
    ///
    /// # Shapes
    /// - `hidden_states`: `[B, C_in, F, H, W]` (any float dtype; cast to the model dtype)
    /// - `timestep`: `[B]` or `[1]` (broadcast), e.g. `σ·1000`
    /// - `encoder_hidden_states`: `[B, L, text_dim]`
    /// - returns `[B, C_out, F, H, W]` in the model dtype.
    ///
    /// # Errors
    /// Shapes that do not fit the config or the context's layout.
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
        let [b, ch, f, h, w] = hidden_states.dims();
        let [pt, ph, pw] = c.patch_size;
        if ch != c.in_channels {
            return Err(ModelError::Input(format!(
                "hidden_states has {ch} channels, the model expects {}",
                c.in_channels
            )));
        }
        let layout = self.layout(f, h, w)?;
        if ctx.layout() != &layout {
            return Err(ModelError::Input(format!(
                "attention context is for layout {:?}, hidden_states {:?} give {layout:?}",
                ctx.layout(),
                [b, ch, f, h, w]
            )));
        }
        self.check_size(b, layout.total_tokens())?;
        let [tb, l, td] = encoder_hidden_states.dims();
        if l == 0 {
            return Err(ModelError::Input(
                "encoder_hidden_states has 0 text tokens: cross-attention needs at least one"
                    .into(),
            ));
        }
        if tb != b || td != c.text_dim {
            return Err(ModelError::Input(format!(
                "encoder_hidden_states is [{tb}, {l}, {td}], expected [{b}, L, {}]",
                c.text_dim
            )));
        }
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
                    "timestep has {n} values for batch {b} (per-token timesteps are not supported)"
                )));
            }
        };

        let device = hidden_states.device();
        let dtype = self.dtype;
        let (tf, th, tw) = (f / pt, h / ph, w / pw);
        let rope_tables = self.rope_tables([tf, th, tw], &device);

        let mut x = self.patch_embedding.forward(to_dtype(hidden_states, dtype));
        let cond = self.condition_embedder.forward(
            &timesteps,
            to_dtype(encoder_hidden_states, dtype),
            dtype,
        );
        for (i, block) in self.blocks.iter().enumerate() {
            x = block.forward(
                x,
                cond.text.clone(),
                cond.timestep_proj.clone(),
                &rope_tables,
                ctx,
                i,
            )?;
        }

        // Output modulation: (table + temb) -> shift, scale (shift first, raw temb).
        let d = c.dim;
        let m = self.scale_shift_table.val() + to_f32(cond.temb).reshape([b, 1, d]);
        let shift = m.clone().narrow(1, 0, 1);
        let scale = m.narrow(1, 1, 1);
        // One fused launch on CubeCL backends: f32 modulation, cast to the model dtype.
        let modulation = Modulate {
            shift: &shift,
            scale: &scale,
            math: ModMath::F32,
        };
        let x = self.norm_out.forward_modulated(x, Some(modulation), dtype);
        let x = self.proj_out.forward(x);

        // Unpatchify: features (pt, ph, pw, c) -> [B, C, F, H, W].
        let co = c.out_channels;
        let x: Tensor<B, 8> = x.reshape([b, tf, th, tw, pt, ph, pw, co]);
        Ok(x.permute([0, 7, 1, 4, 2, 5, 3, 6])
            .reshape([b, co, f, h, w]))
    }
}

/// The self-attention layout of latents `frames x height x width` under `config`.
pub fn layout_for(
    config: &WanConfig,
    frames: usize,
    height: usize,
    width: usize,
) -> Result<VideoLayout> {
    let [pt, ph, pw] = config.patch_size;
    if !frames.is_multiple_of(pt)
        || !height.is_multiple_of(ph)
        || !width.is_multiple_of(pw)
        || frames == 0
        || height == 0
        || width == 0
    {
        return Err(ModelError::Input(format!(
            "latent size {frames}x{height}x{width} is not a positive multiple of the patch size {pt}x{ph}x{pw}"
        )));
    }
    VideoLayout::new(frames / pt, height / ph, width / pw)
        .map_err(|e| ModelError::Input(e.to_string()))
}

impl<B: ModelBackend> vdit_models::Denoiser<B> for WanTransformer3DModel<B> {
    fn class(&self) -> vdit_models::ModelClass {
        vdit_models::ModelClass::Wan
    }

    fn dtype(&self) -> DType {
        self.dtype
    }

    fn in_channels(&self) -> usize {
        self.config.in_channels
    }

    fn text_dim(&self) -> usize {
        self.config.text_dim
    }

    fn plan_dims(&self) -> (usize, usize, usize) {
        (self.config.layers, self.config.heads, self.config.head_dim)
    }

    fn video_layout(&self, latent: [usize; 3], _text_len: usize) -> Result<VideoLayout> {
        let [f, h, w] = latent;
        layout_for(&self.config, f, h, w)
    }

    fn forward_inputs(
        &self,
        inputs: &TensorMap,
        plan: Option<&Plan>,
        device: &B::Device,
    ) -> Result<Tensor<B, 5>> {
        WanTransformer3DModel::forward_inputs(self, inputs, plan, device)
    }
}
