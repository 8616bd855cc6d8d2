//! The text-to-video parts that are not denoisers, recognised by their config: a
//! transformers UMT5 / T5 encoder folder (`architectures: ["UMT5EncoderModel"]`; inputs
//! `input_ids`, `attention_mask` i64 -> `last_hidden_state`) and a diffusers Wan VAE
//! folder (`_class_name: "AutoencoderKLWan"`; `latents` `[B, C, F, H, W]` -> `sample` =
//! `vae.decode(latents).sample`, no de-normalisation).

use std::path::Path;

use burn::tensor::{DType, TensorData};
use vdit_models::io::TensorMap;
use vdit_models::{DiffusersConfig, ModelBackend};
use vdit_text::t5::{ENCODER_ARCHITECTURES, T5Encoder};
use vdit_wan::vae::{VAE_CLASS_NAME, WanVaeDecoder};

use crate::{PipelineError, Result};

/// A model folder that is a pipeline part, not a denoiser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartKind {
    /// transformers `UMT5EncoderModel` / `T5EncoderModel`.
    TextEncoder,
    /// diffusers `AutoencoderKLWan` (decoder).
    WanVae,
}

impl PartKind {
    /// The part in `dir/config.json`, if it is one (a missing or unreadable config is
    /// left to the denoiser path, which reports it).
    pub fn detect(dir: &Path) -> Option<Self> {
        let cfg = DiffusersConfig::from_model_dir(dir).ok()?;
        if cfg.class_name() == Some(VAE_CLASS_NAME) {
            return Some(PartKind::WanVae);
        }
        let archs = cfg.raw().get("architectures")?.as_array()?;
        archs
            .iter()
            .filter_map(|a| a.as_str())
            .any(|a| ENCODER_ARCHITECTURES.contains(&a))
            .then_some(PartKind::TextEncoder)
    }

    /// The output tensor's name.
    pub fn output_name(self) -> &'static str {
        match self {
            PartKind::TextEncoder => "last_hidden_state",
            PartKind::WanVae => "sample",
        }
    }

    /// The inputs the part takes, in words.
    pub fn inputs(self) -> &'static str {
        match self {
            PartKind::TextEncoder => "`input_ids` and `attention_mask`, i64 [B, L]",
            PartKind::WanVae => "`latents` [B, C, F, H, W]",
        }
    }

    /// Loads the part in `dir` (in `dtype`) and runs it on `inputs`; `on_loaded` is called
    /// between loading and running (for timing). Returns the output (under
    /// [`PartKind::output_name`]).
    ///
    /// # Errors
    /// Loading errors (naming the folder), missing or wrongly shaped inputs (the VAE
    /// names its `z_dim`).
    pub fn run<B: ModelBackend>(
        self,
        dir: &Path,
        inputs: &TensorMap,
        dtype: DType,
        device: &B::Device,
        on_loaded: impl FnOnce(),
    ) -> Result<TensorData> {
        let ctx = |e| PipelineError::model(format!("loading {}", dir.display()), e);
        Ok(match self {
            PartKind::TextEncoder => {
                let m = T5Encoder::<B>::load(dir, dtype, device).map_err(ctx)?;
                on_loaded();
                m.forward_inputs(inputs, device)?.into_data()
            }
            PartKind::WanVae => {
                let m = WanVaeDecoder::<B>::load(dir, dtype, device).map_err(ctx)?;
                on_loaded();
                m.forward_inputs(inputs, device)?.into_data()
            }
        })
    }
}
