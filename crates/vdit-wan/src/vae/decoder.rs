//! The Wan VAE decoder (`AutoencoderKLWan.decode`: `post_quant_conv`, then
//! `WanDecoder3d` one latent frame at a time with the frame cache, clamp to [-1, 1]).

use std::path::Path;

use burn::module::Module;
use burn::tensor::activation::silu;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorData};
use vdit_models::io::TensorMap;
use vdit_models::{DiffusersConfig, ModelError, Result, Weights};

use super::config::{WanVaeConfig, WanVaeConfigJson};
use super::layers::{
    AttentionBlock, CausalConv3d, ChannelRmsNorm, FrameCache, ResidualBlock, Upsample,
};

/// Checkpoint keys the decoder does not use (the encoder half of the VAE).
pub const VAE_IGNORED_KEYS: [&str; 2] = ["encoder.", "quant_conv."];

/// One decoder level (`WanUpBlock`): `num_res_blocks + 1` residual blocks, then an
/// optional up-sampler.
#[derive(Module, Debug)]
pub struct UpBlock<B: Backend> {
    /// `resnets.N`.
    pub resnets: Vec<ResidualBlock<B>>,
    /// `upsamplers.0`.
    pub upsampler: Option<Upsample<B>>,
}

impl<B: Backend> UpBlock<B> {
    fn forward(&self, mut x: Tensor<B, 5>, cache: &mut FrameCache<B>) -> Tensor<B, 5> {
        for r in &self.resnets {
            x = r.forward(x, cache);
        }
        match &self.upsampler {
            Some(u) => u.forward(x, cache),
            None => x,
        }
    }
}

/// `AutoencoderKLWan`'s decoding half: `post_quant_conv` and `decoder.*`.
#[derive(Module, Debug)]
pub struct WanVaeDecoder<B: Backend> {
    /// `post_quant_conv` (1x1x1, `z -> z`).
    pub post_quant_conv: CausalConv3d<B>,
    /// `decoder.conv_in` (`z -> dims[0]`).
    pub conv_in: CausalConv3d<B>,
    /// `decoder.mid_block.resnets.0`.
    pub mid_resnet0: ResidualBlock<B>,
    /// `decoder.mid_block.attentions.0`.
    pub mid_attention: AttentionBlock<B>,
    /// `decoder.mid_block.resnets.1`.
    pub mid_resnet1: ResidualBlock<B>,
    /// `decoder.up_blocks.N`.
    pub up_blocks: Vec<UpBlock<B>>,
    /// `decoder.norm_out`.
    pub norm_out: ChannelRmsNorm<B>,
    /// `decoder.conv_out` (`-> out_channels`).
    pub conv_out: CausalConv3d<B>,
    /// The runtime config.
    #[module(skip)]
    pub config: WanVaeConfig,
}

impl<B: Backend> WanVaeDecoder<B> {
    /// Loads the decoder of a diffusers `AutoencoderKLWan` folder (`config.json` +
    /// `diffusion_pytorch_model*.safetensors`; encoder weights are skipped).
    pub fn load(dir: &Path, dtype: DType, device: &B::Device) -> Result<Self> {
        let config = WanVaeConfigJson::from_diffusers(&DiffusersConfig::from_model_dir(dir)?)?
            .into_config()?;
        Self::from_weights(&config, &Weights::from_model_dir(dir, dtype, device)?)
    }

    /// The decoder of `config` with seeded random weights.
    pub fn random(
        config: &WanVaeConfig,
        seed: u64,
        dtype: DType,
        device: &B::Device,
    ) -> Result<Self> {
        Self::from_weights(config, &Weights::random(seed, dtype, device)?)
    }

    /// Builds the decoder from `weights` (root prefix) and checks that every
    /// non-encoder key was used.
    pub fn from_weights(config: &WanVaeConfig, weights: &Weights<B>) -> Result<Self> {
        let c = config;
        let z = c.z_dim;
        let dims = c.decoder_dims();
        let d = weights.pp("decoder");
        let mid = d.pp("mid_block");
        let levels = c.dim_mult.len();
        let mut up_blocks = Vec::with_capacity(levels);
        for i in 0..levels {
            let (mut c_in, c_out) = (dims[i], dims[i + 1]);
            if i > 0 {
                c_in /= 2; // the previous up-sampler halves the channels
            }
            let w = d.pp("up_blocks").pp(i);
            let resnets = (0..=c.num_res_blocks)
                .map(|j| {
                    ResidualBlock::load(
                        &w.pp("resnets").pp(j),
                        if j == 0 { c_in } else { c_out },
                        c_out,
                    )
                })
                .collect::<Result<Vec<_>>>()?;
            let upsampler = if i + 1 < levels {
                Some(Upsample::load(
                    &w.pp("upsamplers").pp(0),
                    c_out,
                    c.temporal_upsample[i],
                )?)
            } else {
                None
            };
            up_blocks.push(UpBlock { resnets, upsampler });
        }
        let last = dims[levels];
        let decoder = WanVaeDecoder {
            post_quant_conv: CausalConv3d::load(
                &weights.pp("post_quant_conv"),
                z,
                z,
                [1; 3],
                [0; 3],
            )?,
            conv_in: CausalConv3d::load(&d.pp("conv_in"), z, dims[0], [3; 3], [1; 3])?,
            mid_resnet0: ResidualBlock::load(&mid.pp("resnets").pp(0), dims[0], dims[0])?,
            mid_attention: AttentionBlock::load(&mid.pp("attentions").pp(0), dims[0])?,
            mid_resnet1: ResidualBlock::load(&mid.pp("resnets").pp(1), dims[0], dims[0])?,
            up_blocks,
            norm_out: ChannelRmsNorm::load(&d.pp("norm_out"), last, true)?,
            conv_out: CausalConv3d::load(&d.pp("conv_out"), last, c.out_channels, [3; 3], [1; 3])?,
            config: c.clone(),
        };
        weights.finish(&VAE_IGNORED_KEYS)?;
        Ok(decoder)
    }

    /// The model's float dtype.
    pub fn dtype(&self) -> DType {
        self.conv_in.weight.val().dtype()
    }

    /// Checks latents of shape `dims` (`[batch, z_dim, frames, height, width]`) before any
    /// work: the channel count, positive sizes, and that the decoded video and the widest
    /// activation of one frame chunk fit the backend's tensor indexing. Every decode calls
    /// it; call it yourself to check a size before allocating the latents.
    ///
    /// # Errors
    /// [`ModelError::Input`] naming the offending size.
    pub fn check_latents(&self, dims: [usize; 5]) -> Result<()>
    where
        B: vdit_models::ModelBackend,
    {
        let [b, c, f, h, w] = dims;
        if c != self.config.z_dim || b == 0 || f == 0 || h == 0 || w == 0 {
            return Err(ModelError::Input(format!(
                "latents {dims:?} must be [batch, {} (z_dim), frames, height, width] with \
                 positive sizes",
                self.config.z_dim
            )));
        }
        // Before any work: the decoded video, and (a bound on) the widest activation of one
        // frame chunk, at full resolution with the most channels and the causal cache's two
        // extra frames, must fit the backend's tensor indexing.
        let c = &self.config;
        let (sf, chunk) = (c.spatial_factor(), c.output_frames(2) - 1 + 2);
        let widest = c.decoder_dims().into_iter().max().unwrap_or(0);
        let (ph, pw) = (h.saturating_mul(sf), w.saturating_mul(sf));
        vdit_models::check_tensor_elems::<B>(
            "the decoded video",
            &[b, c.out_channels, c.output_frames(f), ph, pw],
        )?;
        vdit_models::check_tensor_elems::<B>("a decoder activation", &[b, widest, chunk, ph, pw])
    }

    fn chunk(&self, x: Tensor<B, 5>, cache: &mut FrameCache<B>) -> Tensor<B, 5> {
        cache.start_chunk();
        let x = self.conv_in.forward_cached(x, cache.next_slot());
        let x = self.mid_resnet0.forward(x, cache);
        let x = self.mid_attention.forward(x);
        let mut x = self.mid_resnet1.forward(x, cache);
        for up in &self.up_blocks {
            x = up.forward(x, cache);
        }
        let x = silu(self.norm_out.forward(x));
        self.conv_out.forward_cached(x, cache.next_slot())
    }

    /// `vae.decode(latents).sample`: normalised latents are *not* de-normalised here
    /// (see [`WanVaeDecoder::denormalize`]). Decodes one latent frame at a time, calling
    /// `on_frame(done, total)` after each, and clamps to [-1, 1].
    ///
    /// # Errors
    /// [`ModelError::Input`] when the channel count is not `z_dim` or a size is 0.
    ///
    /// # Shapes
    /// `[B, z, F, H, W] -> [B, out, 1 + 4 (F - 1), 8 H, 8 W]` (Wan2.1 strides).
    pub fn decode_with_progress(
        &self,
        latents: Tensor<B, 5>,
        mut on_frame: impl FnMut(usize, usize),
    ) -> Result<Tensor<B, 5>>
    where
        B: vdit_models::ModelBackend,
    {
        self.check_latents(latents.dims())?;
        let latents = if latents.dtype() == self.dtype() {
            latents
        } else {
            latents.cast(self.dtype())
        };
        let f = latents.dims()[2];
        let x = self.post_quant_conv.forward(latents);
        let mut cache = FrameCache::new();
        let mut outs = Vec::with_capacity(f);
        for i in 0..f {
            outs.push(self.chunk(x.clone().narrow(2, i, 1), &mut cache));
            on_frame(i + 1, f);
        }
        Ok(Tensor::cat(outs, 2).clamp(-1.0, 1.0))
    }

    /// [`WanVaeDecoder::decode_with_progress`] without progress.
    pub fn decode(&self, latents: Tensor<B, 5>) -> Result<Tensor<B, 5>>
    where
        B: vdit_models::ModelBackend,
    {
        self.decode_with_progress(latents, |_, _| {})
    }

    /// The pipeline's de-normalisation of denoised latents before decoding:
    /// `latents / (1 / std) + mean` per channel (`WanPipeline.__call__`), in f32.
    pub fn denormalize(&self, latents: Tensor<B, 5>) -> Result<Tensor<B, 5>>
    where
        B: vdit_models::ModelBackend,
    {
        self.check_latents(latents.dims())?;
        let z = self.config.z_dim;
        let device = latents.device();
        let inv_std: Vec<f32> = self
            .config
            .latents_std
            .iter()
            .map(|s| 1.0 / *s as f32)
            .collect();
        let mean: Vec<f32> = self.config.latents_mean.iter().map(|m| *m as f32).collect();
        let t = |v: Vec<f32>| {
            Tensor::<B, 5>::from_data(TensorData::new(v, [1, z, 1, 1, 1]), (&device, DType::F32))
        };
        let x = vdit_models::nn::to_f32(latents);
        Ok(x / t(inv_std) + t(mean))
    }

    /// `forward` for `cargo xtask forward`: `latents` from an inputs file, decoded.
    pub fn forward_inputs(&self, inputs: &TensorMap, device: &B::Device) -> Result<Tensor<B, 5>>
    where
        B: vdit_models::ModelBackend,
    {
        let latents = inputs.float::<B, 5>("latents", self.dtype(), device)?;
        self.decode(latents)
    }
}

/// Video frames in [0, 1] from decoded samples in [-1, 1] (the video processor's
/// `x / 2 + 0.5`, clamped), as `[B, F, C, H, W]` like `output_type="pt"`.
pub fn to_unit_frames<B: Backend>(sample: Tensor<B, 5>) -> Tensor<B, 5> {
    (vdit_models::nn::to_f32(sample) / 2.0 + 0.5)
        .clamp(0.0, 1.0)
        .swap_dims(1, 2)
}
