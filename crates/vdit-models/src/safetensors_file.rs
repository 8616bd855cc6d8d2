//! Memory-mapped safetensors files (single file or sharded with an index), read one
//! tensor at a time.
//!
//! Nothing is copied until a tensor is asked for; then only that tensor's bytes are
//! decoded. Loading a checkpoint therefore needs the model's size in memory plus one
//! tensor, never twice the checkpoint.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use burn::tensor::{DType, TensorData};
use burn::tensor::{bf16, f16};
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};

use crate::{ModelError, Result};

/// The diffusers weight file name (single file).
pub const WEIGHTS_NAME: &str = "diffusion_pytorch_model.safetensors";
/// The diffusers shard index file name.
pub const WEIGHTS_INDEX_NAME: &str = "diffusion_pytorch_model.safetensors.index.json";
/// The transformers single weights file name (text encoders).
pub const TRANSFORMERS_WEIGHTS_NAME: &str = "model.safetensors";
/// The transformers shard index file name (text encoders).
pub const TRANSFORMERS_INDEX_NAME: &str = "model.safetensors.index.json";

/// Where one tensor lives.
#[derive(Debug, Clone)]
pub struct TensorEntry {
    /// Index of the shard in [`SafetensorsFiles::paths`].
    pub file: usize,
    /// Element type in the file.
    pub dtype: Dtype,
    /// Shape in the file.
    pub shape: Vec<usize>,
    /// Byte range inside the file (absolute).
    start: usize,
    end: usize,
}

/// One or more memory-mapped safetensors files seen as a single key space.
#[derive(Debug)]
pub struct SafetensorsFiles {
    paths: Vec<PathBuf>,
    maps: Vec<Mmap>,
    entries: BTreeMap<String, TensorEntry>,
    metadata: HashMap<String, String>,
}

/// Whether `name` is one plain file name: not empty, no separator, not `.` or `..`.
fn is_plain_file_name(name: &str) -> bool {
    let mut parts = Path::new(name).components();
    matches!(
        (parts.next(), parts.next()),
        (Some(std::path::Component::Normal(n)), None) if n == std::ffi::OsStr::new(name)
    ) && !name.contains(['/', '\\'])
}

impl SafetensorsFiles {
    /// Opens the weights of a diffusers model directory: the shard index
    /// (`diffusion_pytorch_model.safetensors.index.json`) if present, otherwise
    /// `diffusion_pytorch_model.safetensors`, otherwise the only `*.safetensors` file.
    /// transformers folders (`model.safetensors.index.json` + shards, or
    /// `model.safetensors`) are read the same way.
    pub fn open_model_dir(dir: &Path) -> Result<Self> {
        for name in [WEIGHTS_INDEX_NAME, TRANSFORMERS_INDEX_NAME] {
            let index = dir.join(name);
            if index.is_file() {
                return Self::open_index(&index);
            }
        }
        for name in [WEIGHTS_NAME, TRANSFORMERS_WEIGHTS_NAME] {
            let single = dir.join(name);
            if single.is_file() {
                return Self::open(&[single]);
            }
        }
        let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| ModelError::io(dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
            .collect();
        found.sort();
        match found.len() {
            1 => Self::open(&found),
            0 => Err(ModelError::io(
                dir,
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("no {WEIGHTS_INDEX_NAME}, {WEIGHTS_NAME} or other *.safetensors file"),
                ),
            )),
            n => Err(ModelError::Config(format!(
                "{}: {n} *.safetensors files but no {WEIGHTS_INDEX_NAME}; pass the files explicitly",
                dir.display()
            ))),
        }
    }

    /// Opens the shards listed by a `*.safetensors.index.json` (`weight_map`: key ->
    /// shard file name, relative to the index). Every key must be in the shard the
    /// index names. Shard names must be plain file names (as diffusers and
    /// `huggingface_hub` write them): a name with a directory part, `..` or an absolute
    /// path is an error, so an index can only open files beside it.
    pub fn open_index(index: &Path) -> Result<Self> {
        #[derive(serde::Deserialize)]
        struct Index {
            weight_map: BTreeMap<String, String>,
        }
        let text = vdit_patterns::read_text_capped(index, vdit_patterns::MAX_TEXT_BYTES)
            .map_err(|e| ModelError::io(index, e))?;
        let parsed: Index = serde_json::from_str(&text).map_err(|e| ModelError::Json {
            path: index.to_owned(),
            message: e.to_string(),
        })?;
        let dir = index.parent().unwrap_or(Path::new("."));
        for (key, shard) in &parsed.weight_map {
            if !is_plain_file_name(shard) {
                return Err(ModelError::Safetensors {
                    path: index.to_owned(),
                    message: format!(
                        "weight_map maps `{key}` to {shard:?}: shard files must be plain file \
                         names inside the model directory (no directories, `..` or absolute paths)"
                    ),
                });
            }
        }
        let mut shards: Vec<&String> = parsed.weight_map.values().collect();
        shards.sort();
        shards.dedup();
        let paths: Vec<PathBuf> = shards.iter().map(|s| dir.join(s)).collect();
        let files = Self::open(&paths)?;
        for (key, shard) in &parsed.weight_map {
            let want = dir.join(shard);
            match files.entries.get(key) {
                Some(e) if files.paths[e.file] == want => {}
                Some(e) => {
                    return Err(ModelError::Safetensors {
                        path: index.to_owned(),
                        message: format!(
                            "index maps `{key}` to {shard} but it is in {}",
                            files.paths[e.file].display()
                        ),
                    });
                }
                None => {
                    return Err(ModelError::Safetensors {
                        path: want,
                        message: format!("index lists `{key}` but the shard does not contain it"),
                    });
                }
            }
        }
        if files.entries.len() != parsed.weight_map.len() {
            let extra: Vec<String> = files
                .entries
                .keys()
                .filter(|k| !parsed.weight_map.contains_key(*k))
                .cloned()
                .collect();
            return Err(ModelError::Safetensors {
                path: index.to_owned(),
                message: format!(
                    "shards contain keys the index does not list: {}",
                    extra.join(", ")
                ),
            });
        }
        Ok(files)
    }

    /// Memory-maps the given files. A key present in two files is an error.
    pub fn open(paths: &[PathBuf]) -> Result<Self> {
        let mut maps = Vec::with_capacity(paths.len());
        let mut entries = BTreeMap::new();
        let mut metadata = HashMap::new();
        for (i, path) in paths.iter().enumerate() {
            let file = std::fs::File::open(path).map_err(|e| ModelError::io(path, e))?;
            let meta = file.metadata().map_err(|e| ModelError::io(path, e))?;
            if !meta.is_file() {
                return Err(ModelError::io(
                    path,
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        "not a regular file (a safetensors file is expected)",
                    ),
                ));
            }
            // SAFETY: the map is read-only; like every mmap-based loader we assume the
            // file is not truncated while the model loads.
            let map = unsafe { Mmap::map(&file) }.map_err(|e| ModelError::io(path, e))?;
            let bad = |message: String| ModelError::Safetensors {
                path: path.clone(),
                message,
            };
            let (header_len, meta) =
                SafeTensors::read_metadata(&map).map_err(|e| bad(format!("{e:?}")))?;
            let data_start = 8 + header_len;
            if let Some(m) = meta.metadata() {
                metadata.extend(m.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
            for (name, info) in meta.tensors() {
                let (s, e) = info.data_offsets;
                let entry = TensorEntry {
                    file: i,
                    dtype: info.dtype,
                    shape: info.shape.clone(),
                    start: data_start + s,
                    end: data_start + e,
                };
                if entry.end > map.len() {
                    return Err(bad(format!(
                        "tensor `{name}` extends past the end of the file"
                    )));
                }
                if let Some(prev) = entries.insert(name.clone(), entry) {
                    return Err(bad(format!(
                        "tensor `{name}` is also in {}",
                        paths[prev.file].display()
                    )));
                }
            }
            maps.push(map);
        }
        Ok(SafetensorsFiles {
            paths: paths.to_vec(),
            maps,
            entries,
            metadata,
        })
    }

    /// The files, in shard order.
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// Every key, sorted.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no tensors.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The `__metadata__` string map (merged over shards).
    pub fn metadata(&self) -> &HashMap<String, String> {
        &self.metadata
    }

    /// Where `key` lives, if present.
    pub fn entry(&self, key: &str) -> Option<&TensorEntry> {
        self.entries.get(key)
    }

    /// The raw bytes of `key` (little-endian, in the file's dtype).
    pub fn bytes(&self, key: &str) -> Option<&[u8]> {
        let e = self.entries.get(key)?;
        Some(&self.maps[e.file][e.start..e.end])
    }

    /// Decodes `key` into host [`TensorData`] with the file's dtype (bool as `bool`,
    /// every integer and float type as itself). Copies only this tensor.
    pub fn tensor_data(&self, key: &str) -> Result<TensorData> {
        let e = self
            .entries
            .get(key)
            .ok_or_else(|| ModelError::MissingKey {
                key: key.to_owned(),
                expected: vec![],
            })?;
        let bytes = &self.maps[e.file][e.start..e.end];
        decode(key, bytes, e.dtype, &e.shape)
    }
}

/// Decodes little-endian safetensors bytes into [`TensorData`] (any alignment).
pub fn decode(key: &str, bytes: &[u8], dtype: Dtype, shape: &[usize]) -> Result<TensorData> {
    let numel: usize = shape.iter().product();
    let size = dtype.bitsize() / 8;
    if !dtype.bitsize().is_multiple_of(8) || bytes.len() != numel * size {
        return Err(ModelError::UnsupportedDtype {
            key: key.to_owned(),
            dtype: format!("{dtype:?} ({} bytes for shape {shape:?})", bytes.len()),
        });
    }
    macro_rules! le {
        ($t:ty, $n:expr) => {
            TensorData::new(
                bytes
                    .chunks_exact($n)
                    .map(|c| <$t>::from_le_bytes(c.try_into().expect("chunk size")))
                    .collect::<Vec<$t>>(),
                shape.to_vec(),
            )
        };
    }
    Ok(match dtype {
        Dtype::F32 => le!(f32, 4),
        Dtype::F64 => le!(f64, 8),
        Dtype::F16 => le!(f16, 2),
        Dtype::BF16 => le!(bf16, 2),
        Dtype::I64 => le!(i64, 8),
        Dtype::I32 => le!(i32, 4),
        Dtype::I16 => le!(i16, 2),
        Dtype::I8 => le!(i8, 1),
        Dtype::U64 => le!(u64, 8),
        Dtype::U32 => le!(u32, 4),
        Dtype::U16 => le!(u16, 2),
        Dtype::U8 => le!(u8, 1),
        Dtype::BOOL => TensorData::new(
            bytes.iter().map(|&b| b != 0).collect::<Vec<bool>>(),
            shape.to_vec(),
        ),
        other => {
            return Err(ModelError::UnsupportedDtype {
                key: key.to_owned(),
                dtype: format!("{other:?}"),
            });
        }
    })
}

/// The safetensors dtype of a Burn dtype, if it has one.
pub fn safetensors_dtype(dtype: DType) -> Option<Dtype> {
    Some(match dtype {
        DType::F64 => Dtype::F64,
        DType::F32 | DType::Flex32 => Dtype::F32,
        DType::F16 => Dtype::F16,
        DType::BF16 => Dtype::BF16,
        DType::I64 => Dtype::I64,
        DType::I32 => Dtype::I32,
        DType::I16 => Dtype::I16,
        DType::I8 => Dtype::I8,
        DType::U64 => Dtype::U64,
        DType::U32 => Dtype::U32,
        DType::U16 => Dtype::U16,
        DType::U8 => Dtype::U8,
        DType::Bool(_) => Dtype::BOOL,
        DType::QFloat(_) => return None,
    })
}
