//! T5 / UMT5 encoder (transformers `UMT5EncoderModel`, `T5EncoderModel`).
//!
//! - Checkpoint: transformers folder (`config.json` + `model.safetensors` or shards with
//!   `model.safetensors.index.json`), e.g. `text_encoder/` of
//!   `Wan-AI/Wan2.1-T2V-1.3B-Diffusers` (umT5-XXL).
//! - Upstream: transformers `models/umt5/modeling_umt5.py`, `models/t5/modeling_t5.py`.
//! - Numerics: pre-norm blocks with T5 RMS norms (f32), no attention scaling, a learned
//!   relative position bias per layer (UMT5) or shared from the first layer (T5),
//!   softmax in f32, gated-GELU (tanh) FFN.

mod attention;
mod config;
mod encoder;

pub use attention::{T5Attention, additive_key_mask, bucket_table, relative_position_bucket};
pub use config::{ENCODER_ARCHITECTURES, T5Activation, T5Config, T5ConfigJson};
pub use encoder::{IGNORED_KEYS, T5Block, T5Encoder, T5FeedForward};
