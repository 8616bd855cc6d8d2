//! Reading and writing tensors as safetensors (forward inputs and outputs, latents,
//! text embeddings).

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Int, Tensor, TensorData};
use safetensors::{Dtype, View};

use crate::safetensors_file::{SafetensorsFiles, safetensors_dtype};
use crate::{ModelError, Result};

/// Named host tensors read from (or to be written to) a safetensors file.
#[derive(Debug, Clone, Default)]
pub struct TensorMap {
    /// Tensors by name, any dtype.
    pub tensors: BTreeMap<String, TensorData>,
    /// The file's `__metadata__` strings.
    pub metadata: HashMap<String, String>,
    /// The file they came from (for error messages), if any.
    pub path: Option<PathBuf>,
}

impl TensorMap {
    /// Reads every tensor of a safetensors file (every int, float and bool dtype).
    pub fn read(path: &Path) -> Result<Self> {
        let files = SafetensorsFiles::open(&[path.to_owned()])?;
        let mut tensors = BTreeMap::new();
        for key in files.keys() {
            tensors.insert(key.to_owned(), files.tensor_data(key)?);
        }
        Ok(TensorMap {
            tensors,
            metadata: files.metadata().clone(),
            path: Some(path.to_owned()),
        })
    }

    /// Adds (or replaces) a tensor.
    pub fn insert(&mut self, name: impl Into<String>, data: TensorData) {
        self.tensors.insert(name.into(), data);
    }

    /// The tensor `name`, if present.
    pub fn get(&self, name: &str) -> Option<&TensorData> {
        self.tensors.get(name)
    }

    fn where_(&self) -> String {
        self.path
            .as_ref()
            .map(|p| format!(" in {}", p.display()))
            .unwrap_or_default()
    }

    /// The tensor `name` or an error naming it.
    pub fn require(&self, name: &str) -> Result<&TensorData> {
        self.tensors.get(name).ok_or_else(|| {
            ModelError::Input(format!(
                "missing tensor `{name}`{} (have: {})",
                self.where_(),
                self.tensors.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })
    }

    /// Float tensor `name` of rank `D` on `device` in `dtype` (any stored int/float dtype
    /// is converted).
    pub fn float<B: Backend, const D: usize>(
        &self,
        name: &str,
        dtype: DType,
        device: &B::Device,
    ) -> Result<Tensor<B, D>> {
        let data = self.require(name)?;
        check_rank::<D>(name, data)?;
        if matches!(data.dtype, DType::Bool(_) | DType::QFloat(_)) {
            return Err(ModelError::Input(format!(
                "`{name}` has dtype {:?}, expected a number",
                data.dtype
            )));
        }
        Ok(Tensor::from_data(
            data.clone().convert_dtype(dtype),
            (device, dtype),
        ))
    }

    /// Optional float tensor (`None` when absent).
    pub fn float_opt<B: Backend, const D: usize>(
        &self,
        name: &str,
        dtype: DType,
        device: &B::Device,
    ) -> Result<Option<Tensor<B, D>>> {
        if self.tensors.contains_key(name) {
            self.float(name, dtype, device).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Int tensor `name` of rank `D` (i64/i32/...; floats are truncated).
    pub fn int<B: Backend, const D: usize>(
        &self,
        name: &str,
        device: &B::Device,
    ) -> Result<Tensor<B, D, Int>> {
        let data = self.require(name)?;
        check_rank::<D>(name, data)?;
        Ok(Tensor::from_data(
            data.clone().convert_dtype(DType::I64),
            (device, DType::I64),
        ))
    }

    /// The values of `name` as f32 on the host (any numeric dtype), e.g. timesteps.
    pub fn values_f32(&self, name: &str) -> Result<Vec<f32>> {
        let data = self.require(name)?;
        data.clone()
            .convert_dtype(DType::F32)
            .into_vec::<f32>()
            .map_err(|e| ModelError::Input(format!("`{name}`: {e:?}")))
    }

    /// Writes every tensor atomically (temp file + rename) with the metadata.
    pub fn write(&self, path: &Path) -> Result<()> {
        let bytes = self.to_bytes(path)?;
        vdit_patterns::write_atomic(path, &bytes).map_err(|e| ModelError::io(path, e))
    }

    /// The safetensors file of every tensor with the metadata, as bytes (`path` is only
    /// used in error messages), e.g. to stage it in a [`vdit_patterns::OutputSet`].
    pub fn to_bytes(&self, path: &Path) -> Result<Vec<u8>> {
        let views: Vec<(String, DataView<'_>)> = self
            .tensors
            .iter()
            .map(|(k, d)| {
                let dtype =
                    safetensors_dtype(d.dtype).ok_or_else(|| ModelError::UnsupportedDtype {
                        key: k.clone(),
                        dtype: format!("{:?}", d.dtype),
                    })?;
                Ok((k.clone(), DataView { data: d, dtype }))
            })
            .collect::<Result<_>>()?;
        let meta = (!self.metadata.is_empty()).then(|| self.metadata.clone());
        safetensors::serialize(views, meta).map_err(|e| ModelError::Safetensors {
            path: path.to_owned(),
            message: e.to_string(),
        })
    }
}

fn check_rank<const D: usize>(name: &str, data: &TensorData) -> Result<()> {
    if data.shape.len() == D {
        Ok(())
    } else {
        Err(ModelError::Input(format!(
            "`{name}` has shape {:?}, expected rank {D}",
            data.shape.as_slice()
        )))
    }
}

struct DataView<'a> {
    data: &'a TensorData,
    dtype: Dtype,
}

impl View for DataView<'_> {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        self.data.shape.as_slice()
    }
    fn data(&self) -> Cow<'_, [u8]> {
        if self.dtype == Dtype::BOOL {
            // Burn may store bools wider than one byte; safetensors wants one byte each.
            let v: Vec<u8> = self.data.iter::<bool>().map(u8::from).collect();
            Cow::Owned(v)
        } else {
            Cow::Borrowed(self.data.as_bytes())
        }
    }
    fn data_len(&self) -> usize {
        self.data.num_elements() * self.dtype.bitsize() / 8
    }
}

/// Writes tensors to `path` atomically (convenience around [`TensorMap::write`]).
pub fn write_tensors<B: Backend, const D: usize>(
    path: &Path,
    tensors: Vec<(&str, Tensor<B, D>)>,
) -> Result<()> {
    let mut map = TensorMap::default();
    for (name, t) in tensors {
        map.insert(name, t.into_data());
    }
    map.write(path)
}
