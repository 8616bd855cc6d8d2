//! Text encoders of the Sparse-vDiT text-to-video pipelines, in Burn.
//!
//! - [`t5`]: the T5 / UMT5 encoder (Wan2.1's umT5-XXL; CogVideoX's T5-v1.1-XXL shares the
//!   code with `bias_per_layer = false`), loaded from a transformers folder through
//!   [`vdit_models::Weights`].
//! - [`prompt`]: the tokenizer (`tokenizer.json` through the pure-Rust `tokenizers`
//!   crate), Wan's prompt cleaning and [`PromptEncoder`] (prompts to zero-padded
//!   embeddings, like diffusers' `WanPipeline`).
//!
//! ```
//! use burn::backend::Flex;
//! use burn::tensor::{DType, Int, Tensor};
//! use vdit_text::t5::{T5Config, T5Encoder};
//!
//! let device = Default::default();
//! let encoder = T5Encoder::<Flex>::random(&T5Config::umt5_tiny(64), 0, DType::F32, &device)?;
//! let ids = Tensor::<Flex, 2, Int>::from_ints([[5, 9, 1, 0]], &device);
//! let mask = Tensor::<Flex, 2, Int>::from_ints([[1, 1, 1, 0]], &device);
//! assert_eq!(encoder.forward(ids, mask)?.dims(), [1, 4, 32]);
//! # Ok::<(), vdit_models::ModelError>(())
//! ```
#![warn(missing_docs)]

pub mod prompt;
pub mod t5;

pub use prompt::{PromptEncoder, PromptTokenizer, prompt_clean};
