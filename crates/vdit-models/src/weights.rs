//! Building a model from a checkpoint, one tensor at a time (candle's `VarBuilder`
//! idea, for Burn).
//!
//! A model's constructor asks [`Weights`] for each parameter by its checkpoint key and
//! expected shape; the key space is navigated with [`Weights::pp`] so layer code names
//! keys exactly as diffusers does (`blocks.3.attn1.to_q`). Every tensor is decoded from
//! the memory-mapped file only when asked for, converted to the model's float dtype
//! and moved to the device. After construction, [`Weights::finish`] reports weights the
//! model never asked for. Missing keys, wrong shapes and unexpected keys are errors that
//! name the key.
//!
//! [`Weights::random`] builds the same model with random weights (seeded, on the
//! device) for benchmarks without a checkpoint.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Distribution, Tensor, TensorData};

use crate::safetensors_file::SafetensorsFiles;
use crate::{ModelError, Result};

/// How a parameter is initialised when weights are random (ignored when loading).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    /// All zeros (biases of zero-initialised layers).
    Zeros,
    /// All ones (norm scales).
    Ones,
    /// Uniform in `[-bound, bound]` (PyTorch's default Linear/Conv init uses
    /// `1/sqrt(fan_in)`).
    Uniform(f64),
    /// Normal with mean 0 and this standard deviation.
    Normal(f64),
}

impl Init {
    /// PyTorch's default for a layer with `fan_in` inputs: uniform `±1/sqrt(fan_in)`.
    pub fn fan_in(fan_in: usize) -> Self {
        Init::Uniform(1.0 / (fan_in.max(1) as f64).sqrt())
    }
}

enum Source {
    Files(SafetensorsFiles),
    Random,
}

struct Shared<B: Backend> {
    source: Source,
    device: B::Device,
    dtype: DType,
    used: Mutex<BTreeSet<String>>,
}

/// A view of a checkpoint (or of a random-weight generator) at a key prefix.
///
/// Cheap to clone; all clones share the record of which keys were used.
#[derive(Clone)]
pub struct Weights<B: Backend> {
    shared: Arc<Shared<B>>,
    prefix: String,
}

impl<B: Backend> std::fmt::Debug for Weights<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.shared.source {
            Source::Files(files) => format!("{} tensors in {:?}", files.len(), files.paths()),
            Source::Random => "random".to_owned(),
        };
        f.debug_struct("Weights")
            .field("source", &kind)
            .field("prefix", &self.prefix)
            .field("dtype", &self.shared.dtype)
            .finish()
    }
}

impl<B: Backend> Weights<B> {
    /// Weights of a diffusers model directory (single file or sharded with an index),
    /// converted to `dtype` (a float dtype: F32, BF16 or F16) on `device`.
    pub fn from_model_dir(dir: &Path, dtype: DType, device: &B::Device) -> Result<Self> {
        Self::from_files(SafetensorsFiles::open_model_dir(dir)?, dtype, device)
    }

    /// Weights from already opened safetensors files.
    pub fn from_files(files: SafetensorsFiles, dtype: DType, device: &B::Device) -> Result<Self> {
        check_float(dtype)?;
        Ok(Self::new(Source::Files(files), dtype, device))
    }

    /// Random weights, seeded (the backend's RNG is seeded with `seed`), generated on
    /// the device in `dtype`. Every parameter follows its [`Init`].
    pub fn random(seed: u64, dtype: DType, device: &B::Device) -> Result<Self> {
        check_float(dtype)?;
        B::seed(device, seed);
        Ok(Self::new(Source::Random, dtype, device))
    }

    fn new(source: Source, dtype: DType, device: &B::Device) -> Self {
        Weights {
            shared: Arc::new(Shared {
                source,
                device: device.clone(),
                dtype,
                used: Mutex::new(BTreeSet::new()),
            }),
            prefix: String::new(),
        }
    }

    /// The same weights one level down: `pp("blocks").pp(3)` reads `blocks.3.*`.
    pub fn pp(&self, name: impl std::fmt::Display) -> Self {
        Weights {
            shared: self.shared.clone(),
            prefix: self.key(&name.to_string()),
        }
    }

    /// The full key of `name` under this prefix.
    pub fn key(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    /// The model's float dtype.
    pub fn dtype(&self) -> DType {
        self.shared.dtype
    }

    /// The device tensors are created on.
    pub fn device(&self) -> &B::Device {
        &self.shared.device
    }

    /// Whether the weights are random (no checkpoint).
    pub fn is_random(&self) -> bool {
        matches!(self.shared.source, Source::Random)
    }

    /// Whether the checkpoint has `name` under this prefix (always false when random).
    pub fn contains(&self, name: &str) -> bool {
        match &self.shared.source {
            Source::Files(f) => f.entry(&self.key(name)).is_some(),
            Source::Random => false,
        }
    }

    /// Parameter `name` with the expected `shape`, in the model's float dtype.
    pub fn get<const D: usize>(
        &self,
        name: &str,
        shape: [usize; D],
        init: Init,
    ) -> Result<Tensor<B, D>> {
        self.get_dtype(name, shape, init, self.shared.dtype)
    }

    /// Parameter `name` kept in f32 whatever the model dtype (diffusers'
    /// `_keep_in_fp32_modules`: norms, modulation tables, time embedders).
    pub fn get_f32<const D: usize>(
        &self,
        name: &str,
        shape: [usize; D],
        init: Init,
    ) -> Result<Tensor<B, D>> {
        self.get_dtype(name, shape, init, DType::F32)
    }

    /// Parameter `name` with the expected `shape` in `dtype`.
    pub fn get_dtype<const D: usize>(
        &self,
        name: &str,
        shape: [usize; D],
        init: Init,
        dtype: DType,
    ) -> Result<Tensor<B, D>> {
        let key = self.key(name);
        let device = &self.shared.device;
        match &self.shared.source {
            Source::Random => Ok(random_tensor(shape, init, dtype, device)),
            Source::Files(files) => {
                let entry = files.entry(&key).ok_or_else(|| ModelError::MissingKey {
                    key: key.clone(),
                    expected: shape.to_vec(),
                })?;
                if entry.shape != shape {
                    return Err(ModelError::ShapeMismatch {
                        key,
                        expected: shape.to_vec(),
                        found: entry.shape.clone(),
                    });
                }
                let data = files.tensor_data(&key)?;
                if !is_float(data.dtype) {
                    return Err(ModelError::UnsupportedDtype {
                        key,
                        dtype: format!("{:?} (a float weight was expected)", entry.dtype),
                    });
                }
                let data: TensorData = data.convert_dtype(dtype);
                self.shared
                    .used
                    .lock()
                    .expect("weights lock poisoned")
                    .insert(key);
                Ok(Tensor::from_data(data, (device, dtype)))
            }
        }
    }

    /// Checks that every checkpoint key was used; keys containing one of `ignore` (as a
    /// substring, like diffusers' `_keys_to_ignore_on_load_unexpected`) are allowed.
    pub fn finish(&self, ignore: &[&str]) -> Result<()> {
        let Source::Files(files) = &self.shared.source else {
            return Ok(());
        };
        let used = self.shared.used.lock().expect("weights lock poisoned");
        let unused: Vec<String> = files
            .keys()
            .filter(|k| !used.contains(*k) && !ignore.iter().any(|i| k.contains(i)))
            .map(str::to_owned)
            .collect();
        if unused.is_empty() {
            Ok(())
        } else {
            Err(ModelError::UnexpectedKeys { keys: unused })
        }
    }
}

fn is_float(dtype: DType) -> bool {
    matches!(
        dtype,
        DType::F64 | DType::F32 | DType::Flex32 | DType::F16 | DType::BF16
    )
}

fn check_float(dtype: DType) -> Result<()> {
    if matches!(dtype, DType::F32 | DType::F16 | DType::BF16) {
        Ok(())
    } else {
        Err(ModelError::Config(format!(
            "model dtype must be f32, bf16 or f16, got {dtype:?}"
        )))
    }
}

fn random_tensor<B: Backend, const D: usize>(
    shape: [usize; D],
    init: Init,
    dtype: DType,
    device: &B::Device,
) -> Tensor<B, D> {
    let t = match init {
        Init::Zeros => Tensor::<B, D>::zeros(shape, (device, DType::F32)),
        Init::Ones => Tensor::<B, D>::ones(shape, (device, DType::F32)),
        Init::Uniform(b) => {
            Tensor::<B, D>::random(shape, Distribution::Uniform(-b, b), (device, DType::F32))
        }
        Init::Normal(s) => {
            Tensor::<B, D>::random(shape, Distribution::Normal(0.0, s), (device, DType::F32))
        }
    };
    if dtype == DType::F32 {
        t
    } else {
        t.cast(dtype)
    }
}
