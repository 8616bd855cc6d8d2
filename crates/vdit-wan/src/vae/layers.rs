//! Building blocks of the Wan VAE decoder (diffusers `autoencoder_kl_wan.py`): causal 3D
//! convolutions with a frame cache, channel RMS norms, residual blocks, the per-frame
//! mid attention and the up-samplers.
//!
//! # The frame cache
//! diffusers decodes one latent frame at a time and keeps, for every causal
//! convolution, the last two input frames of the previous chunk (`feat_cache`). A
//! causal convolution over `cat(cache, chunk)` padded with `2 - cached` zero frames at
//! the front gives exactly the output of the convolution over the whole sequence, so
//! memory is bounded by one chunk. Layers take their cache slots from a [`FrameCache`]
//! in a fixed order (diffusers' `feat_idx`).

use burn::module::{Module, Param};
use burn::tensor::Tensor;
use burn::tensor::activation::silu;
use burn::tensor::backend::Backend;
use burn::tensor::module::{conv2d, conv3d};
use burn::tensor::ops::{AttentionModuleOptions, ConvOptions};
use vdit_models::nn::{to_dtype, to_f32};
use vdit_models::{Init, Result, Weights};

/// Frames a causal 3x3x3 convolution keeps from the previous chunk (diffusers `CACHE_T`).
const CACHE_T: usize = 2;

/// One cache slot (diffusers' `feat_cache[i]`).
#[derive(Debug, Clone, Default)]
pub enum CacheSlot<B: Backend> {
    /// Nothing seen yet.
    #[default]
    Empty,
    /// A temporal up-sampler has passed its first chunk through (diffusers `"Rep"`).
    Started,
    /// The last (up to two) input frames of the previous chunk.
    Frames(Tensor<B, 5>),
}

/// The cache slots of one decoder, taken in order by the layers of each chunk.
#[derive(Debug, Clone, Default)]
pub struct FrameCache<B: Backend> {
    slots: Vec<CacheSlot<B>>,
    cursor: usize,
}

impl<B: Backend> FrameCache<B> {
    /// An empty cache.
    pub fn new() -> Self {
        FrameCache {
            slots: Vec::new(),
            cursor: 0,
        }
    }

    /// Starts a chunk (slots are taken from the first again).
    pub fn start_chunk(&mut self) {
        self.cursor = 0;
    }

    /// The next slot of the current chunk.
    pub fn next_slot(&mut self) -> &mut CacheSlot<B> {
        if self.cursor == self.slots.len() {
            self.slots.push(CacheSlot::Empty);
        }
        self.cursor += 1;
        &mut self.slots[self.cursor - 1]
    }
}

fn frames<B: Backend>(x: &Tensor<B, 5>) -> usize {
    x.dims()[2]
}

fn last_frames<B: Backend>(x: Tensor<B, 5>, n: usize) -> Tensor<B, 5> {
    let t = frames(&x);
    x.narrow(2, t - n.min(t), n.min(t))
}

/// `WanCausalConv3d`: a Conv3d whose temporal padding is all at the front
/// (`2 * pad_t` zero frames, or the cached frames of the previous chunk), spatial
/// padding symmetric. Weight `[out, in, kt, kh, kw]`, bias `[out]`.
#[derive(Module, Debug)]
pub struct CausalConv3d<B: Backend> {
    /// `[out, in, kt, kh, kw]`.
    pub weight: Param<Tensor<B, 5>>,
    /// `[out]`.
    pub bias: Param<Tensor<B, 1>>,
    /// `(t, h, w)` padding of the PyTorch module (the front gets `2 * t`).
    pub padding: [usize; 3],
}

impl<B: Backend> CausalConv3d<B> {
    /// Loads `weight` / `bias` under `w` with kernel `k` and padding `padding`.
    pub fn load(
        w: &Weights<B>,
        c_in: usize,
        c_out: usize,
        k: [usize; 3],
        padding: [usize; 3],
    ) -> Result<Self> {
        let init = Init::fan_in(c_in * k.iter().product::<usize>());
        Ok(CausalConv3d {
            weight: Param::from_tensor(w.get("weight", [c_out, c_in, k[0], k[1], k[2]], init)?),
            bias: Param::from_tensor(w.get("bias", [c_out], init)?),
            padding,
        })
    }

    fn conv(&self, x: Tensor<B, 5>) -> Tensor<B, 5> {
        let [_, _, kt, _, _] = self.weight.dims();
        let options = ConvOptions::new(
            [1, 1, 1],
            [0, self.padding[1], self.padding[2]],
            [1, 1, 1],
            1,
        );
        let t_out = frames(&x) + 1 - kt;
        let [_, c, _, h, w] = x.dims();
        // Bound the im2col workspace at large frames: one output frame at a time.
        if t_out > 1 && c * h * w * kt > (1 << 22) {
            let outs: Vec<_> = (0..t_out)
                .map(|t| {
                    conv3d(
                        x.clone().narrow(2, t, kt),
                        self.weight.val(),
                        Some(self.bias.val()),
                        options.clone(),
                    )
                })
                .collect();
            Tensor::cat(outs, 2)
        } else {
            conv3d(x, self.weight.val(), Some(self.bias.val()), options)
        }
    }

    /// The convolution of the whole sequence `x` (zero front padding).
    ///
    /// # Shapes
    /// `[B, C_in, T, H, W] -> [B, C_out, T, H, W]` (for `kt = 2 * pad_t + 1`).
    pub fn forward(&self, x: Tensor<B, 5>) -> Tensor<B, 5> {
        self.forward_cached(x, &mut CacheSlot::Empty)
    }

    /// The convolution of chunk `x` continuing the frames in `slot`; `slot` then holds
    /// this chunk's last frames.
    pub fn forward_cached(&self, x: Tensor<B, 5>, slot: &mut CacheSlot<B>) -> Tensor<B, 5> {
        let front = 2 * self.padding[0];
        if front == 0 {
            return self.conv(x);
        }
        let new_frames = frames(&x);
        let input = match std::mem::take(slot) {
            CacheSlot::Frames(cache) => Tensor::cat(vec![cache, x], 2),
            _ => x,
        };
        let cached = frames(&input) - new_frames;
        *slot = CacheSlot::Frames(last_frames(input.clone(), CACHE_T));
        // `front` frames of history before the chunk: the cached ones, then zeros.
        let input = if cached > front {
            input.narrow(2, cached - front, front + new_frames)
        } else if cached < front {
            let [b, c, _, h, w] = input.dims();
            let zeros = Tensor::<B, 5>::zeros(
                [b, c, front - cached, h, w],
                (&input.device(), input.dtype()),
            );
            Tensor::cat(vec![zeros, input], 2)
        } else {
            input
        };
        self.conv(input)
    }
}

/// `WanRMS_norm` over channels (dim 1): `x / max(||x||_2, 1e-12) * sqrt(C) * gamma`,
/// computed in f32. `gamma` is stored `[C, 1, 1, 1]` (video) or `[C, 1, 1]` (image).
#[derive(Module, Debug)]
pub struct ChannelRmsNorm<B: Backend> {
    /// `[C]`.
    pub gamma: Param<Tensor<B, 1>>,
}

impl<B: Backend> ChannelRmsNorm<B> {
    /// Loads `gamma` under `w`: `[dim, 1, 1, 1]` when `video`, else `[dim, 1, 1]`.
    pub fn load(w: &Weights<B>, dim: usize, video: bool) -> Result<Self> {
        let gamma = if video {
            w.get_f32("gamma", [dim, 1, 1, 1], Init::Ones)?
                .reshape([dim])
        } else {
            w.get_f32("gamma", [dim, 1, 1], Init::Ones)?.reshape([dim])
        };
        Ok(ChannelRmsNorm {
            gamma: Param::from_tensor(gamma),
        })
    }

    /// Normalises over dim 1 of a rank-`D` tensor `[N, C, ...]`.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let dtype = x.dtype();
        let x = to_f32(x);
        let c = x.dims()[1];
        let norm = x.clone().square().sum_dim(1).sqrt().clamp_min(1e-12);
        let mut shape = [1usize; D];
        shape[1] = c;
        let gamma = to_f32(self.gamma.val()).reshape(shape) * (c as f64).sqrt();
        to_dtype(x / norm * gamma, dtype)
    }
}

/// `WanResidualBlock`: `shortcut(x) + conv2(silu(norm2(conv1(silu(norm1(x))))))`.
#[derive(Module, Debug)]
pub struct ResidualBlock<B: Backend> {
    /// `norm1`.
    pub norm1: ChannelRmsNorm<B>,
    /// `conv1` (3x3x3, causal).
    pub conv1: CausalConv3d<B>,
    /// `norm2`.
    pub norm2: ChannelRmsNorm<B>,
    /// `conv2` (3x3x3, causal).
    pub conv2: CausalConv3d<B>,
    /// `conv_shortcut` (1x1x1) when the channel count changes.
    pub shortcut: Option<CausalConv3d<B>>,
}

impl<B: Backend> ResidualBlock<B> {
    /// Loads the block under `w`.
    pub fn load(w: &Weights<B>, c_in: usize, c_out: usize) -> Result<Self> {
        Ok(ResidualBlock {
            norm1: ChannelRmsNorm::load(&w.pp("norm1"), c_in, true)?,
            conv1: CausalConv3d::load(&w.pp("conv1"), c_in, c_out, [3; 3], [1; 3])?,
            norm2: ChannelRmsNorm::load(&w.pp("norm2"), c_out, true)?,
            conv2: CausalConv3d::load(&w.pp("conv2"), c_out, c_out, [3; 3], [1; 3])?,
            shortcut: if c_in != c_out {
                Some(CausalConv3d::load(
                    &w.pp("conv_shortcut"),
                    c_in,
                    c_out,
                    [1; 3],
                    [0; 3],
                )?)
            } else {
                None
            },
        })
    }

    /// One chunk through the block (two cache slots).
    pub fn forward(&self, x: Tensor<B, 5>, cache: &mut FrameCache<B>) -> Tensor<B, 5> {
        let h = match &self.shortcut {
            Some(s) => s.forward(x.clone()),
            None => x.clone(),
        };
        let x = silu(self.norm1.forward(x));
        let x = self.conv1.forward_cached(x, cache.next_slot());
        let x = silu(self.norm2.forward(x));
        let x = self.conv2.forward_cached(x, cache.next_slot());
        x + h
    }
}

/// A 2D convolution with PyTorch weights `[out, in, k, k]` and bias, applied per frame.
#[derive(Module, Debug)]
pub struct Conv2d<B: Backend> {
    /// `[out, in, k, k]`.
    pub weight: Param<Tensor<B, 4>>,
    /// `[out]`.
    pub bias: Param<Tensor<B, 1>>,
    /// Padding on each side.
    pub padding: usize,
}

impl<B: Backend> Conv2d<B> {
    /// Loads `weight` / `bias` under `w`.
    pub fn load(
        w: &Weights<B>,
        c_in: usize,
        c_out: usize,
        k: usize,
        padding: usize,
    ) -> Result<Self> {
        let init = Init::fan_in(c_in * k * k);
        Ok(Conv2d {
            weight: Param::from_tensor(w.get("weight", [c_out, c_in, k, k], init)?),
            bias: Param::from_tensor(w.get("bias", [c_out], init)?),
            padding,
        })
    }

    /// `[N, C_in, H, W] -> [N, C_out, H, W]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let p = self.padding;
        conv2d(
            x,
            self.weight.val(),
            Some(self.bias.val()),
            ConvOptions::new([1, 1], [p, p], [1, 1], 1),
        )
    }
}

/// `[B, C, T, H, W] -> [B*T, C, H, W]`.
fn frames_to_images<B: Backend>(x: Tensor<B, 5>) -> Tensor<B, 4> {
    let [b, c, t, h, w] = x.dims();
    x.swap_dims(1, 2).reshape([b * t, c, h, w])
}

/// `[B*T, C, H, W] -> [B, C, T, H, W]`.
fn images_to_frames<B: Backend>(x: Tensor<B, 4>, b: usize) -> Tensor<B, 5> {
    let [bt, c, h, w] = x.dims();
    x.reshape([b, bt / b, c, h, w]).swap_dims(1, 2)
}

/// `WanAttentionBlock`: single-head self-attention over the pixels of each frame, with a
/// residual connection.
#[derive(Module, Debug)]
pub struct AttentionBlock<B: Backend> {
    /// `norm` (image RMS norm).
    pub norm: ChannelRmsNorm<B>,
    /// `to_qkv` (1x1).
    pub to_qkv: Conv2d<B>,
    /// `proj` (1x1).
    pub proj: Conv2d<B>,
}

impl<B: Backend> AttentionBlock<B> {
    /// Loads the block under `w`.
    pub fn load(w: &Weights<B>, dim: usize) -> Result<Self> {
        Ok(AttentionBlock {
            norm: ChannelRmsNorm::load(&w.pp("norm"), dim, false)?,
            to_qkv: Conv2d::load(&w.pp("to_qkv"), dim, 3 * dim, 1, 0)?,
            proj: Conv2d::load(&w.pp("proj"), dim, dim, 1, 0)?,
        })
    }

    /// `[B, C, T, H, W] -> [B, C, T, H, W]`.
    pub fn forward(&self, x: Tensor<B, 5>) -> Tensor<B, 5> {
        let [b, c, _, h, w] = x.dims();
        let identity = x.clone();
        let img = frames_to_images(x);
        let n = img.dims()[0];
        let qkv = self.to_qkv.forward(self.norm.forward(img)); // [n, 3c, h, w]
        let qkv = qkv.reshape([n, 3 * c, h * w]).swap_dims(1, 2); // [n, hw, 3c]
        let part = |i: usize| qkv.clone().narrow(2, i * c, c).unsqueeze_dim::<4>(1);
        let out = burn::tensor::module::attention(
            part(0),
            part(1),
            part(2),
            None,
            None,
            AttentionModuleOptions::default(),
        ); // [n, 1, hw, c]
        let out = out
            .reshape([n, h * w, c])
            .swap_dims(1, 2)
            .reshape([n, c, h, w]);
        images_to_frames(self.proj.forward(out), b) + identity
    }
}

/// 2x nearest up-sampling of `[N, C, H, W]` (`nearest-exact` at scale 2).
fn upsample2x<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    let [n, c, h, w] = x.dims();
    x.reshape([n, c, h, 1, w, 1])
        .expand([n, c, h, 2, w, 2])
        .reshape([n, c, 2 * h, 2 * w])
}

/// `WanResample` in the decoder: `upsample2d` (2x nearest + 3x3 conv to `dim / 2`) or
/// `upsample3d` (first a causal temporal conv to `2 * dim` channels that doubles every
/// frame but the very first, then the same spatial step).
#[derive(Module, Debug)]
pub struct Upsample<B: Backend> {
    /// `resample.1`: 3x3 conv `dim -> dim / 2`.
    pub conv: Conv2d<B>,
    /// `time_conv` (3x1x1, causal) `dim -> 2 * dim` for `upsample3d`.
    pub time_conv: Option<CausalConv3d<B>>,
}

impl<B: Backend> Upsample<B> {
    /// Loads `resample.1` (and `time_conv` when `temporal`) under `w`.
    pub fn load(w: &Weights<B>, dim: usize, temporal: bool) -> Result<Self> {
        Ok(Upsample {
            conv: Conv2d::load(&w.pp("resample").pp(1), dim, dim / 2, 3, 1)?,
            time_conv: if temporal {
                Some(CausalConv3d::load(
                    &w.pp("time_conv"),
                    dim,
                    2 * dim,
                    [3, 1, 1],
                    [1, 0, 0],
                )?)
            } else {
                None
            },
        })
    }

    /// One chunk (one cache slot when temporal).
    pub fn forward(&self, x: Tensor<B, 5>, cache: &mut FrameCache<B>) -> Tensor<B, 5> {
        let x = match &self.time_conv {
            Some(tc) => {
                let slot = cache.next_slot();
                if matches!(slot, CacheSlot::Empty) {
                    // The first chunk (the first latent frame) is not doubled.
                    *slot = CacheSlot::Started;
                    x
                } else {
                    let [b, c, t, h, w] = x.dims();
                    let y = tc.forward_cached(x, slot); // [b, 2c, t, h, w]
                    // diffusers: reshape(b, 2, c, t, h, w), stack on dim 3 -> frames
                    // (t0 first half, t0 second half, t1 ...).
                    y.reshape([b, 2, c, t, h * w])
                        .permute([0, 2, 3, 1, 4])
                        .reshape([b, c, 2 * t, h, w])
                }
            }
            None => x,
        };
        let b = x.dims()[0];
        let img = upsample2x(to_f32(frames_to_images(x.clone())));
        let img = to_dtype(img, x.dtype());
        images_to_frames(self.conv.forward(img), b)
    }
}
