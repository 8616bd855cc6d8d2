//! `HunyuanVideoTransformer3DModel`: conditioning, token refiner, patchify, dual- and
//! single-stream blocks over `[video | text]`, modulated output, unpatchify.

use std::path::Path;

use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, DType, Distribution, Tensor, TensorData};
use vdit_attention::AttentionContext;
use vdit_models::ModelBackend;
use vdit_models::io::TensorMap;
use vdit_models::nn::rope::{FreqPrecision, RopeCache, rope_3d};
use vdit_models::nn::{LayerNorm32, Linear, silu, to_dtype};
use vdit_models::{DiffusersConfig, ModelError, Result, Weights};
use vdit_patterns::{Plan, TextPosition, VideoLayout};

use crate::attention::{JointInputs, RopeTables};
use crate::block::{DualStreamBlock, modulate};
use crate::embeddings::{ConditionEmbedding, PatchEmbed};
use crate::mask::TextMask;
use crate::refiner::TokenRefiner;
use crate::single_block::SingleStreamBlock;
use crate::{HunyuanConfig, HunyuanConfigJson};

/// Keys diffusers ignores when loading HunyuanVideo (none).
pub const IGNORED_KEYS: &[&str] = &[];

/// The arguments of one denoiser call, under diffusers' names.
#[derive(Debug, Clone)]
pub struct HunyuanInputs<B: Backend> {
    /// Latents `[B, C_in, F, H, W]` (any float dtype; cast to the model dtype).
    pub hidden_states: Tensor<B, 5>,
    /// `[B]` or `[1]` (broadcast), e.g. `σ·1000`.
    pub timestep: Tensor<B, 1>,
    /// Text-encoder states `[B, L, text_dim]` (right-padded).
    pub encoder_hidden_states: Tensor<B, 3>,
    /// `[B, L]`, `true` for valid text tokens.
    pub encoder_attention_mask: Tensor<B, 2, Bool>,
    /// Pooled (CLIP) text `[B, pooled_dim]`.
    pub pooled_projections: Tensor<B, 2>,
    /// `[B]` or `[1]`: embedded guidance scale × 1000 (required when the config has
    /// `guidance_embeds`, ignored otherwise, like diffusers).
    pub guidance: Option<Tensor<B, 1>>,
}

impl<B: Backend> HunyuanInputs<B> {
    /// Reads the inputs from a tensor file under diffusers' names (`hidden_states`,
    /// `timestep`, `encoder_hidden_states`, `encoder_attention_mask` (optional: all
    /// valid when absent; any int/float/bool dtype with values 0/1),
    /// `pooled_projections`, `guidance` (optional)); floats are converted to `dtype`.
    ///
    /// # Errors
    /// Unknown or missing tensors, wrong ranks, mask values other than 0/1.
    pub fn from_tensor_map(map: &TensorMap, dtype: DType, device: &B::Device) -> Result<Self> {
        const NAMES: [&str; 6] = [
            "hidden_states",
            "timestep",
            "encoder_hidden_states",
            "encoder_attention_mask",
            "pooled_projections",
            "guidance",
        ];
        if let Some(name) = map.tensors.keys().find(|k| !NAMES.contains(&k.as_str())) {
            return Err(ModelError::Input(format!(
                "unsupported HunyuanVideo input `{name}` (expected {})",
                NAMES.join(", ")
            )));
        }
        let encoder_hidden_states: Tensor<B, 3> =
            map.float("encoder_hidden_states", dtype, device)?;
        let [b, l, _] = encoder_hidden_states.dims();
        let encoder_attention_mask = read_mask(map, "encoder_attention_mask", [b, l], device)?;
        Ok(HunyuanInputs {
            hidden_states: map.float("hidden_states", dtype, device)?,
            timestep: map.float("timestep", DType::F32, device)?,
            encoder_hidden_states,
            encoder_attention_mask,
            pooled_projections: map.float("pooled_projections", dtype, device)?,
            guidance: map.float_opt("guidance", DType::F32, device)?,
        })
    }

    /// Random inputs for timing at a given size: normal latents, text and pooled
    /// projections, text right-padded to `valid_text` of `text_len` tokens (all valid
    /// when `None`), timestep 500 and guidance 6000 (6.0 × 1000).
    pub fn random(
        config: &HunyuanConfig,
        batch: usize,
        latent: [usize; 3],
        text_len: usize,
        valid_text: Option<usize>,
        device: &B::Device,
    ) -> Result<Self> {
        let [f, h, w] = latent;
        let n = Distribution::Normal(0.0, 1.0);
        let valid = valid_text.unwrap_or(text_len).min(text_len);
        let mask = TextMask::right_padded(&vec![valid; batch], text_len)?;
        Ok(HunyuanInputs {
            hidden_states: Tensor::random([batch, config.in_channels, f, h, w], n, device),
            timestep: Tensor::full([batch], 500.0, device),
            encoder_hidden_states: Tensor::random([batch, text_len, config.text_dim], n, device),
            encoder_attention_mask: Tensor::from_data(
                TensorData::new(mask.values().to_vec(), [batch, text_len]),
                device,
            ),
            pooled_projections: Tensor::random([batch, config.pooled_dim], n, device),
            guidance: config
                .guidance_embeds
                .then(|| Tensor::full([batch], 6000.0, device)),
        })
    }
}

impl<B: Backend> HunyuanInputs<B> {
    /// The inputs as host tensors under diffusers' names (the inverse of
    /// [`Self::from_tensor_map`]; the mask is stored as bool, `guidance` only when set).
    pub fn into_tensor_map(self) -> TensorMap {
        let mut map = TensorMap::default();
        map.insert("hidden_states", self.hidden_states.into_data());
        map.insert("timestep", self.timestep.into_data());
        map.insert(
            "encoder_hidden_states",
            self.encoder_hidden_states.into_data(),
        );
        map.insert(
            "encoder_attention_mask",
            self.encoder_attention_mask.into_data(),
        );
        map.insert("pooled_projections", self.pooled_projections.into_data());
        if let Some(g) = self.guidance {
            map.insert("guidance", g.into_data());
        }
        map
    }
}

/// The HunyuanVideo text-to-video denoiser.
#[derive(Module, Debug)]
pub struct HunyuanVideoTransformer3DModel<B: Backend> {
    /// `x_embedder.proj`.
    pub x_embedder: PatchEmbed<B>,
    /// `context_embedder` (token refiner).
    pub context_embedder: TokenRefiner<B>,
    /// `time_text_embed`.
    pub time_text_embed: ConditionEmbedding<B>,
    /// `transformer_blocks.{i}` (plan layers `0..layers`).
    pub transformer_blocks: Vec<DualStreamBlock<B>>,
    /// `single_transformer_blocks.{j}` (plan layers `layers + j`).
    pub single_transformer_blocks: Vec<SingleStreamBlock<B>>,
    /// `norm_out.linear`: `D -> 2D`, rows **scale, shift**.
    pub norm_out_linear: Linear<B>,
    /// `norm_out.norm` (no affine).
    pub norm_out: LayerNorm32<B>,
    /// `proj_out`: `D -> C_out*pt*ph*pw`, features ordered (c, pt, ph, pw).
    pub proj_out: Linear<B>,
    /// Runtime config.
    #[module(skip)]
    pub config: HunyuanConfig,
    /// Model float dtype.
    #[module(skip)]
    pub dtype: DType,
    /// RoPE tables per layout ([`Self::rope_tables`]).
    #[module(skip)]
    pub rope_cache: RopeCache,
}

impl<B: ModelBackend> HunyuanVideoTransformer3DModel<B> {
    /// Loads a diffusers model directory (`config.json` + safetensors, single or
    /// sharded; f32/bf16/f16 files) into `dtype` (f32, bf16 or f16) on `device`.
    ///
    /// # Errors
    /// Unreadable or unsupported config, missing / unexpected / wrongly shaped weights
    /// (the error names the key).
    pub fn load(dir: &Path, dtype: DType, device: &B::Device) -> Result<Self> {
        let config = HunyuanConfigJson::from_diffusers(&DiffusersConfig::from_model_dir(dir)?)?
            .into_config()?;
        let weights = Weights::from_model_dir(dir, dtype, device)?;
        Self::from_weights(&config, &weights)
    }

    /// The model with random weights (seeded; benchmarks without a checkpoint).
    pub fn random(
        config: &HunyuanConfig,
        seed: u64,
        dtype: DType,
        device: &B::Device,
    ) -> Result<Self> {
        Self::from_weights(config, &Weights::random(seed, dtype, device)?)
    }

    /// Builds the model from `weights` (root prefix) and checks that every checkpoint
    /// key was used.
    pub fn from_weights(config: &HunyuanConfig, weights: &Weights<B>) -> Result<Self> {
        let c = config;
        let d = c.dim;
        let [pt, ph, pw] = c.patch_size;
        let transformer_blocks = (0..c.layers)
            .map(|i| DualStreamBlock::load(&weights.pp("transformer_blocks").pp(i), c))
            .collect::<Result<Vec<_>>>()?;
        let single_transformer_blocks = (0..c.single_layers)
            .map(|j| SingleStreamBlock::load(&weights.pp("single_transformer_blocks").pp(j), c))
            .collect::<Result<Vec<_>>>()?;
        let model = HunyuanVideoTransformer3DModel {
            x_embedder: PatchEmbed::load(
                &weights.pp("x_embedder").pp("proj"),
                c.in_channels,
                c.dim,
                c.patch_size,
            )?,
            context_embedder: TokenRefiner::load(&weights.pp("context_embedder"), c)?,
            time_text_embed: ConditionEmbedding::load(&weights.pp("time_text_embed"), c)?,
            transformer_blocks,
            single_transformer_blocks,
            norm_out_linear: Linear::load(&weights.pp("norm_out").pp("linear"), d, 2 * d, true)?,
            norm_out: LayerNorm32::plain(d, c.eps),
            proj_out: Linear::load(
                &weights.pp("proj_out"),
                d,
                c.out_channels * pt * ph * pw,
                true,
            )?,
            config: c.clone(),
            dtype: weights.dtype(),
            rope_cache: RopeCache::default(),
        };
        weights.finish(IGNORED_KEYS)?;
        Ok(model)
    }

    /// The joint self-attention layout of latents `frames x height x width` with
    /// `text_len` (padded) text tokens after the video.
    pub fn layout(
        &self,
        frames: usize,
        height: usize,
        width: usize,
        text_len: usize,
    ) -> Result<VideoLayout> {
        layout_for(&self.config, frames, height, width, text_len)
    }

    /// RoPE tables for a post-patch grid (f32, `[tokens, head_dim/2]`; diffusers computes
    /// the frequencies in f32), built on the first call for a `(grid, device)` and then
    /// taken from [`Self::rope_cache`].
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
            FreqPrecision::F32,
            device,
        )
    }

    /// The attention context for latents `frames x height x width` and `text_len` text
    /// tokens: dense, or following `plan` (checked against this model's
    /// `layers + single_layers` attention layers, heads and head dim, and compiled for
    /// the layout). Plan layer `i < layers` is dual-stream block `i`; plan layer
    /// `layers + j` is single-stream block `j`.
    pub fn attention_context(
        &self,
        frames: usize,
        height: usize,
        width: usize,
        text_len: usize,
        plan: Option<&Plan>,
    ) -> Result<AttentionContext> {
        let layout = self.layout(frames, height, width, text_len)?;
        let c = &self.config;
        vdit_models::attention_context(layout, plan, c.attention_layers(), c.heads, c.head_dim)
    }

    /// One denoiser call with the arguments read from a tensor file under diffusers'
    /// names (see [`HunyuanInputs::from_tensor_map`]), dense or following `plan`.
    pub fn forward_inputs(
        &self,
        inputs: &TensorMap,
        plan: Option<&Plan>,
        device: &B::Device,
    ) -> Result<Tensor<B, 5>>
    where
        B: ModelBackend,
    {
        let inputs = HunyuanInputs::from_tensor_map(inputs, self.dtype, device)?;
        let [_, _, f, h, w] = inputs.hidden_states.dims();
        let [_, l, _] = inputs.encoder_hidden_states.dims();
        let ctx = self.attention_context(f, h, w, l, plan)?;
        self.forward(inputs, &ctx)
    }

    /// Checks that a forward of `batch` x `tokens` (video + text) fits the backend's
    /// tensor indexing: the widest activation is the single-stream block's
    /// `[batch, tokens, dim + mlp_dim]` (attention output next to the MLP branch).
    ///
    /// # Errors
    /// [`ModelError::Input`] naming the size when it does not fit.
    pub fn check_size(&self, batch: usize, tokens: usize) -> Result<()>
    where
        B: ModelBackend,
    {
        let c = &self.config;
        vdit_models::check_tensor_elems::<B>(
            "the single-stream block's activation",
            &[batch, tokens, c.dim + c.mlp_dim],
        )
    }

    /// One denoiser call (diffusers `forward`).
    ///
    /// `ctx` must carry the layout of these latents and text ([`Self::layout`]); with a
    /// plan, self-attention over the video part is sparse (text rows and columns stay
    /// computed). Returns `[B, C_out, F, H, W]` in the model dtype.
    ///
    /// # Errors
    /// Shapes that do not fit the config or the context's layout, a mask row without a
    /// valid token, a missing `guidance` when the model embeds guidance.
    pub fn forward(&self, inputs: HunyuanInputs<B>, ctx: &AttentionContext) -> Result<Tensor<B, 5>>
    where
        B: ModelBackend,
    {
        let c = &self.config;
        let HunyuanInputs {
            hidden_states,
            timestep,
            encoder_hidden_states,
            encoder_attention_mask,
            pooled_projections,
            guidance,
        } = inputs;
        let [b, ch, f, h, w] = hidden_states.dims();
        if ch != c.in_channels {
            return Err(ModelError::Input(format!(
                "hidden_states has {ch} channels, the model expects {}",
                c.in_channels
            )));
        }
        let [tb, l, td] = encoder_hidden_states.dims();
        if tb != b || td != c.text_dim {
            return Err(ModelError::Input(format!(
                "encoder_hidden_states is [{tb}, {l}, {td}], expected [{b}, L, {}]",
                c.text_dim
            )));
        }
        let layout = self.layout(f, h, w, l)?;
        if ctx.layout() != &layout {
            return Err(ModelError::Input(format!(
                "attention context is for layout {:?}, the inputs give {layout:?}",
                ctx.layout()
            )));
        }
        self.check_size(b, layout.total_tokens())?;
        if encoder_attention_mask.dims() != [b, l] {
            return Err(ModelError::Input(format!(
                "encoder_attention_mask is {:?}, expected [{b}, {l}]",
                encoder_attention_mask.dims()
            )));
        }
        if pooled_projections.dims() != [b, c.pooled_dim] {
            return Err(ModelError::Input(format!(
                "pooled_projections is {:?}, expected [{b}, {}]",
                pooled_projections.dims(),
                c.pooled_dim
            )));
        }
        let timesteps = per_batch("timestep", timestep, b)?;
        let guidance = match (c.guidance_embeds, guidance) {
            (true, Some(g)) => Some(per_batch("guidance", g, b)?),
            (true, None) => {
                return Err(ModelError::Input(
                    "`guidance` is required: the model has a guidance embedder (guidance_embeds=true)"
                        .into(),
                ));
            }
            (false, _) => None,
        };
        let mask = TextMask::from_tensor(encoder_attention_mask)?;

        let device = hidden_states.device();
        let dtype = self.dtype;
        let [pt, ph, pw] = c.patch_size;
        let (tf, th, tw) = (f / pt, h / ph, w / pw);
        let nv = tf * th * tw;
        let rope = self.rope_tables([tf, th, tw], &device);

        let temb = self.time_text_embed.forward(
            &timesteps,
            guidance.as_deref(),
            to_dtype(pooled_projections, dtype),
            dtype,
        );
        let mut x = self.x_embedder.forward(to_dtype(hidden_states, dtype));
        let mut txt = self.context_embedder.forward(
            to_dtype(encoder_hidden_states, dtype),
            &timesteps,
            &mask,
        );

        let joint = JointInputs {
            rope: &rope,
            key_padding: mask.key_padding::<B>(nv, &device),
            ctx,
        };
        for (i, block) in self.transformer_blocks.iter().enumerate() {
            (x, txt) = block.forward(x, txt, temb.clone(), &joint, i)?;
        }
        let mut hs = Tensor::cat(vec![x, txt], 1);
        for (j, block) in self.single_transformer_blocks.iter().enumerate() {
            hs = block.forward(hs, nv, temb.clone(), &joint, c.layers + j)?;
        }
        let x = hs.narrow(1, 0, nv);

        // norm_out (AdaLayerNormContinuous): scale first, then shift.
        let d = c.dim;
        let m = self.norm_out_linear.forward(silu(temb));
        let scale = m.clone().narrow(1, 0, d).reshape([b, 1, d]);
        let shift = m.narrow(1, d, d).reshape([b, 1, d]);
        let x = modulate(&self.norm_out, x, &shift, &scale);
        let x = self.proj_out.forward(x);

        // Unpatchify: features (c, pt, ph, pw) -> [B, C, F, H, W].
        let co = c.out_channels;
        let x: Tensor<B, 8> = x.reshape([b, tf, th, tw, co, pt, ph, pw]);
        Ok(x.permute([0, 4, 1, 5, 2, 6, 3, 7])
            .reshape([b, co, f, h, w]))
    }
}

/// Reads mask `name` (`[b, l]`, any int/float/bool dtype with values 0/1; all valid when
/// absent) as booleans (`true` = valid).
pub(crate) fn read_mask<B: Backend>(
    map: &TensorMap,
    name: &str,
    [b, l]: [usize; 2],
    device: &B::Device,
) -> Result<Tensor<B, 2, Bool>> {
    let Some(data) = map.get(name) else {
        return Ok(Tensor::<B, 2, Bool>::full([b, l], true, device));
    };
    if data.shape.as_slice() != [b, l] {
        return Err(ModelError::Input(format!(
            "`{name}` has shape {:?}, expected [{b}, {l}]",
            data.shape.as_slice()
        )));
    }
    let values = map.values_f32(name)?;
    if let Some(v) = values.iter().find(|v| **v != 0.0 && **v != 1.0) {
        return Err(ModelError::Input(format!(
            "`{name}` must hold 0/1 values, found {v}"
        )));
    }
    let valid: Vec<bool> = values.iter().map(|v| *v != 0.0).collect();
    Ok(Tensor::from_data(TensorData::new(valid, [b, l]), device))
}

/// One value per batch element (a single value is broadcast), read to the host.
fn per_batch<B: Backend>(name: &str, t: Tensor<B, 1>, batch: usize) -> Result<Vec<f32>> {
    let v: Vec<f32> = t
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .map_err(|e| ModelError::Input(format!("{name}: {e:?}")))?;
    match v.len() {
        n if n == batch => Ok(v),
        1 => Ok(vec![v[0]; batch]),
        n => Err(ModelError::Input(format!(
            "`{name}` has {n} values for batch {batch}"
        ))),
    }
}

/// The joint self-attention layout of latents `frames x height x width` with `text_len`
/// text tokens after the video, under `config`.
pub fn layout_for(
    config: &HunyuanConfig,
    frames: usize,
    height: usize,
    width: usize,
    text_len: usize,
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
    if text_len == 0 {
        return Err(ModelError::Input(
            "HunyuanVideo needs at least one text token".into(),
        ));
    }
    VideoLayout::new(frames / pt, height / ph, width / pw)
        .and_then(|l| l.with_text(text_len, TextPosition::Suffix))
        .map_err(|e| ModelError::Input(e.to_string()))
}

impl<B: ModelBackend> vdit_models::Denoiser<B> for HunyuanVideoTransformer3DModel<B> {
    fn class(&self) -> vdit_models::ModelClass {
        vdit_models::ModelClass::HunyuanVideo
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
        let c = &self.config;
        (c.attention_layers(), c.heads, c.head_dim)
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
        HunyuanVideoTransformer3DModel::forward_inputs(self, inputs, plan, device)
    }
}
