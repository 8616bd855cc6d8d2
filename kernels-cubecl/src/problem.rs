//! Problem description (shapes, dtypes, options), independent of the data.

use crate::KernelError;
use cubecl::ir::{ElemType, FloatKind, StorageType, UIntKind};

/// Element type of Q, K, V and the output (accumulation is always f32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttnDtype {
    /// 32-bit float.
    F32,
    /// IEEE half.
    F16,
    /// bfloat16.
    BF16,
}

impl AttnDtype {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            AttnDtype::F32 => 4,
            AttnDtype::F16 | AttnDtype::BF16 => 2,
        }
    }

    /// Lower-case name (`f32`, `f16`, `bf16`).
    pub fn name(self) -> &'static str {
        match self {
            AttnDtype::F32 => "f32",
            AttnDtype::F16 => "f16",
            AttnDtype::BF16 => "bf16",
        }
    }

    /// The CubeCL storage type.
    pub fn storage(self) -> StorageType {
        let kind = match self {
            AttnDtype::F32 => FloatKind::F32,
            AttnDtype::F16 => FloatKind::F16,
            AttnDtype::BF16 => FloatKind::BF16,
        };
        ElemType::Float(kind).into()
    }
}

/// Element type of the key-padding mask `[batch, tokens]` (nonzero = valid key).
/// Burn's bool tensors are `u8` on CUDA and `u32` on wgpu.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MaskDtype {
    /// One byte per key.
    U8,
    /// Four bytes per key.
    U32,
}

impl MaskDtype {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            MaskDtype::U8 => 1,
            MaskDtype::U32 => 4,
        }
    }

    /// The CubeCL storage type.
    pub fn storage(self) -> StorageType {
        match self {
            MaskDtype::U8 => ElemType::UInt(UIntKind::U8).into(),
            MaskDtype::U32 => ElemType::UInt(UIntKind::U32).into(),
        }
    }
}

/// Which kernel implementation runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum KernelPath {
    /// Tensor cores when the device has `cmma` for the dtype, plane operations and a
    /// block size that is a multiple of 64; the portable kernel otherwise.
    #[default]
    Auto,
    /// Force the tensor-core kernel (error if unavailable).
    TensorCore,
    /// Force the portable kernel.
    Portable,
}

/// The tensor-core engine (see the crate README for the measured differences).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TcEngine {
    /// FlashAttention-2-style: manual `mma.sync.m16n8k16`, softmax in registers
    /// (`kernel/mma.rs`; sm_80+). Where the device lacks it, the wmma engine runs.
    #[default]
    Mma,
    /// The first kernel: `cmma` 16x16x16 fragments, `S` and `P` through shared memory
    /// (`kernel/tensor_core.rs`; any device with cmma).
    Wmma,
}

/// Variants of the tensor-core kernels. The defaults are the measured best (H100/H200,
/// `results/kernels/README.md`); the others exist for benchmarking and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TcOptions {
    /// Engine.
    pub engine: TcEngine,
    /// Planes (warps of 32) per cube: 4 (64 query rows, default) or 8 (128 rows; used when
    /// the block size is a multiple of 128, else 4).
    pub warps: usize,
    /// mma engine: K/V double-buffered with `cp.async` (tile i+1 in flight while tile i is
    /// computed; default). `false` loads them synchronously (1.4x slower on the H100).
    pub async_kv: bool,
    /// mma engine fast path, 0..=3 (default 3): `1` runs tiles whose keys are all valid
    /// through an unmasked softmax and skips unneeded rescales and permutation loads; `2`
    /// adds `2^x` through `powf`; `3` adds tree reductions and contiguous K/V row copies;
    /// `0` is the kernel without fast paths.
    pub fast: u32,
    /// wmma engine: keep V's global loads in flight during `S = Q K^T` and the softmax.
    pub prefetch_v: bool,
}

impl Default for TcOptions {
    fn default() -> Self {
        TcOptions {
            engine: TcEngine::Mma,
            warps: 4,
            async_kv: true,
            fast: 3,
            prefetch_v: false,
        }
    }
}

impl TcOptions {
    /// Checks the ranges (`warps` 4 or 8, `fast` at most 3).
    pub fn validate(&self) -> Result<(), KernelError> {
        if !matches!(self.warps, 4 | 8) {
            return Err(KernelError::Option(format!(
                "tensor-core warps must be 4 or 8, got {}",
                self.warps
            )));
        }
        if self.fast > 3 {
            return Err(KernelError::Option(format!(
                "tensor-core fast level must be 0..=3, got {}",
                self.fast
            )));
        }
        Ok(())
    }
}

/// One sparse attention call: `[batch, heads, tokens, head_dim]` contiguous Q and output,
/// `[batch, heads, kv_tokens, head_dim]` contiguous K and V (`kv_tokens == tokens` for
/// self-attention; a different key length for cross-attention on a
/// [`crate::DeviceLayer::dense_cross`] layer), optional key padding `[batch, kv_tokens]` and
/// optional lse `[batch, heads, tokens]` (f32, natural token order).
#[derive(Debug, Clone, PartialEq)]
pub struct SparseAttention {
    /// Batch size.
    pub batch: usize,
    /// Heads (must equal the layer's heads).
    pub heads: usize,
    /// Query tokens (must equal the layer's layout tokens).
    pub tokens: usize,
    /// Key/value tokens (must equal the layer's key length: `tokens` for every layer
    /// compiled from a plan).
    pub kv_tokens: usize,
    /// Head dimension (multiple of 16, at most 128 on the portable path).
    pub head_dim: usize,
    /// Element type of Q, K, V and output.
    pub dtype: AttnDtype,
    /// Softmax scale; `None` means `1/sqrt(head_dim)`.
    pub scale: Option<f32>,
    /// Element type of the key-padding mask, when one is given.
    pub key_padding: Option<MaskDtype>,
    /// Whether the per-row log-sum-exp is written.
    pub want_lse: bool,
    /// Kernel selection.
    pub path: KernelPath,
    /// Tensor-core kernel variant (ignored by the portable kernel).
    pub tc: TcOptions,
}

impl SparseAttention {
    /// A problem with default scale, no key padding, no lse, automatic path.
    pub fn new(
        batch: usize,
        heads: usize,
        tokens: usize,
        head_dim: usize,
        dtype: AttnDtype,
    ) -> Self {
        SparseAttention {
            batch,
            heads,
            tokens,
            kv_tokens: tokens,
            head_dim,
            dtype,
            scale: None,
            key_padding: None,
            want_lse: false,
            path: KernelPath::Auto,
            tc: TcOptions::default(),
        }
    }

    /// Dense cross-attention of `tokens` queries on `kv_tokens` keys (run it on a
    /// [`crate::DeviceLayer::dense_cross`] layer of the same lengths).
    pub fn cross(
        batch: usize,
        heads: usize,
        tokens: usize,
        kv_tokens: usize,
        head_dim: usize,
        dtype: AttnDtype,
    ) -> Self {
        SparseAttention {
            kv_tokens,
            ..Self::new(batch, heads, tokens, head_dim, dtype)
        }
    }

    /// Sets the softmax scale.
    pub fn with_scale(mut self, scale: f32) -> Self {
        self.scale = Some(scale);
        self
    }

    /// Declares a key-padding mask of the given element type.
    pub fn with_key_padding(mut self, dtype: MaskDtype) -> Self {
        self.key_padding = Some(dtype);
        self
    }

    /// Requests the lse output.
    pub fn with_lse(mut self) -> Self {
        self.want_lse = true;
        self
    }

    /// Forces a kernel path.
    pub fn with_path(mut self, path: KernelPath) -> Self {
        self.path = path;
        self
    }

    /// Sets the tensor-core kernel variant.
    pub fn with_tc(mut self, tc: TcOptions) -> Self {
        self.tc = tc;
        self
    }

    /// The scale actually used.
    pub fn scale_value(&self) -> f32 {
        self.scale.unwrap_or(1.0 / (self.head_dim as f32).sqrt())
    }

    /// Elements of Q (= output; = K = V for self-attention).
    pub fn qkv_elems(&self) -> usize {
        self.batch * self.heads * self.tokens * self.head_dim
    }

    /// Elements of K (= V).
    pub fn kv_elems(&self) -> usize {
        self.batch * self.heads * self.kv_tokens * self.head_dim
    }

    /// Dense FLOPs `4 * B * H * L * L_kv * D`.
    pub fn dense_flops(&self) -> f64 {
        4.0 * self.batch as f64
            * self.heads as f64
            * self.tokens as f64
            * self.kv_tokens as f64
            * self.head_dim as f64
    }

    /// Checks sizes that do not depend on the device.
    pub fn validate(&self) -> Result<(), KernelError> {
        for (field, v) in [
            ("batch", self.batch),
            ("heads", self.heads),
            ("tokens", self.tokens),
            ("kv_tokens", self.kv_tokens),
        ] {
            if v == 0 {
                return Err(KernelError::Shape {
                    field,
                    expected: 1,
                    got: 0,
                });
            }
        }
        if self.head_dim == 0 || !self.head_dim.is_multiple_of(16) {
            return Err(KernelError::HeadDim {
                head_dim: self.head_dim,
                reason: "must be a positive multiple of 16".into(),
            });
        }
        if let Some(s) = self.scale
            && !s.is_finite()
        {
            return Err(KernelError::Option(format!("scale {s} is not finite")));
        }
        self.tc.validate()?;
        let widest = self.qkv_elems().max(self.kv_elems());
        if widest >= u32::MAX as usize {
            return Err(KernelError::Option(format!(
                "{widest} elements per tensor exceed 32-bit indexing"
            )));
        }
        Ok(())
    }
}
