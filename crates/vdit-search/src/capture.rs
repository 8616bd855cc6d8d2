//! Capture files: Q/K/V of chosen (step, layer) self-attention calls, written by any
//! framework, so that a search can run without porting a model.
//!
//! Format (the spec's "Capture file"): a safetensors file with tensors
//! `q.{step}.{layer}`, `k.{step}.{layer}`, `v.{step}.{layer}` of shape
//! `[heads, tokens, head_dim]` (f32, f16 or bf16; batch 1), and string metadata
//! `frames`, `height`, `width`, `text_tokens`, `text_position` (`prefix|suffix|none`)
//! and `model` (free text). Step and layer are zero-based integers. Every captured step
//! must hold every layer `0..layers`; steps may be any subset of the schedule (for
//! example 0, 10, 20 of 50). `tools/write_captures.py` writes such files from PyTorch or
//! NumPy.
//!
//! [`CaptureFile::open`] memory-maps the file and validates the whole header (names,
//! shapes, dtypes, metadata) up front; tensors are converted to f32 one layer at a time
//! by [`CaptureFile::read`], so files far larger than memory can be searched.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use vdit_patterns::{TextPosition, VideoLayout};

use crate::{LayerQkv, SearchError};

/// What a capture file says about the sequence it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureMeta {
    /// Token layout (from `frames`, `height`, `width`, `text_tokens`, `text_position`).
    pub layout: VideoLayout,
    /// Free-text model name (`model`).
    pub model: String,
}

impl CaptureMeta {
    /// The safetensors string metadata for this layout and model.
    pub fn to_metadata(&self) -> HashMap<String, String> {
        let l = &self.layout;
        let pos = match l.text_position {
            TextPosition::Prefix => "prefix",
            TextPosition::Suffix => "suffix",
            TextPosition::None => "none",
        };
        HashMap::from([
            ("frames".to_string(), l.frames.to_string()),
            ("height".to_string(), l.height.to_string()),
            ("width".to_string(), l.width.to_string()),
            ("text_tokens".to_string(), l.text.to_string()),
            ("text_position".to_string(), pos.to_string()),
            ("model".to_string(), self.model.clone()),
        ])
    }

    /// Parses the safetensors string metadata of `path`.
    pub fn from_metadata(
        path: &Path,
        meta: Option<&HashMap<String, String>>,
    ) -> Result<Self, SearchError> {
        let meta = meta.ok_or_else(|| {
            SearchError::capture(path, "has no string metadata (needs frames, height, width, text_tokens, text_position, model)")
        })?;
        let get = |key: &str| {
            meta.get(key).ok_or_else(|| {
                SearchError::capture(path, format!("metadata key `{key}` is missing"))
            })
        };
        let int = |key: &str| -> Result<usize, SearchError> {
            let s = get(key)?;
            s.trim().parse::<usize>().map_err(|_| {
                SearchError::capture(
                    path,
                    format!("metadata `{key}` = {s:?} is not a non-negative integer"),
                )
            })
        };
        let position = match get("text_position")?.trim() {
            "prefix" => TextPosition::Prefix,
            "suffix" => TextPosition::Suffix,
            "none" => TextPosition::None,
            other => {
                return Err(SearchError::capture(
                    path,
                    format!(
                        "metadata `text_position` = {other:?} is not one of prefix, suffix, none"
                    ),
                ));
            }
        };
        let (frames, height, width) = (int("frames")?, int("height")?, int("width")?);
        let text = int("text_tokens")?;
        let layout = VideoLayout::new(frames, height, width)
            .and_then(|l| l.with_text(text, position))
            .map_err(|e| SearchError::capture(path, format!("metadata layout: {e}")))?;
        Ok(CaptureMeta {
            layout,
            model: get("model")?.clone(),
        })
    }
}

/// Element type used when writing a capture file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaptureDtype {
    /// 32-bit float.
    F32,
    /// IEEE half.
    F16,
    /// bfloat16.
    Bf16,
}

/// Largest layer index + 1 a capture file may hold (real models have at most 60).
const MAX_LAYERS: usize = 10_000;

#[derive(Debug, Clone)]
struct Slot {
    dtype: Dtype,
    start: usize,
    end: usize,
}

/// A validated, memory-mapped capture file.
#[derive(Debug)]
pub struct CaptureFile {
    path: PathBuf,
    mmap: memmap2::Mmap,
    meta: CaptureMeta,
    steps: Vec<usize>,
    layers: usize,
    heads: usize,
    head_dim: usize,
    /// `(step, layer)` -> q, k, v slots (byte ranges in the mapped file).
    slots: BTreeMap<(usize, usize), [Slot; 3]>,
}

fn parse_name(name: &str) -> Option<(usize, usize, usize)> {
    let mut parts = name.split('.');
    let which = match parts.next()? {
        "q" => 0,
        "k" => 1,
        "v" => 2,
        _ => return None,
    };
    let step = parts.next()?.parse().ok()?;
    let layer = parts.next()?.parse().ok()?;
    parts.next().is_none().then_some((which, step, layer))
}

impl CaptureFile {
    /// Opens and validates a capture file: metadata, tensor names, the (step, layer)
    /// grid, shapes (`[heads, tokens, head_dim]` with `tokens` equal to the layout's
    /// sequence length and the same heads/head_dim everywhere) and dtypes.
    pub fn open(path: &Path) -> Result<Self, SearchError> {
        let file = std::fs::File::open(path).map_err(|source| SearchError::Io {
            path: path.to_owned(),
            source,
        })?;
        if !file.metadata().is_ok_and(|m| m.is_file()) {
            return Err(SearchError::capture(
                path,
                "is not a regular file (a directory or device?); expected a safetensors file",
            ));
        }
        // SAFETY: the mapping is read-only; a capture file modified while a search
        // reads it yields wrong numbers, never undefined behaviour in safe code that
        // only reads bytes.
        let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(|source| SearchError::Io {
            path: path.to_owned(),
            source,
        })?;
        let (header_len, metadata) = SafeTensors::read_metadata(&mmap).map_err(|e| {
            SearchError::capture(path, format!("not a valid safetensors file: {e}"))
        })?;
        let meta = CaptureMeta::from_metadata(path, metadata.metadata().as_ref())?;
        let tokens = meta.layout.total_tokens();
        let data_start = 8 + header_len;

        let mut found: BTreeMap<(usize, usize), [Option<Slot>; 3]> = BTreeMap::new();
        let mut shape: Option<(String, [usize; 2])> = None;
        let mut tensors: Vec<_> = metadata.tensors().into_iter().collect();
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, info) in tensors {
            let Some((which, step, layer)) = parse_name(&name) else {
                return Err(SearchError::capture(
                    path,
                    format!("unexpected tensor `{name}` (expected q/k/v.{{step}}.{{layer}})"),
                ));
            };
            if step >= vdit_patterns::MAX_STEPS || layer >= MAX_LAYERS {
                return Err(SearchError::capture(
                    path,
                    format!(
                        "tensor `{name}`: step must be below {} and layer below {MAX_LAYERS}",
                        vdit_patterns::MAX_STEPS
                    ),
                ));
            }
            if !matches!(info.dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16) {
                return Err(SearchError::capture(
                    path,
                    format!(
                        "tensor `{name}` has dtype {:?}; expected F32, F16 or BF16",
                        info.dtype
                    ),
                ));
            }
            let &[h, n, d] = info.shape.as_slice() else {
                return Err(SearchError::capture(
                    path,
                    format!(
                        "tensor `{name}` has shape {:?}; expected [heads, tokens, head_dim]",
                        info.shape
                    ),
                ));
            };
            if n != tokens {
                return Err(SearchError::capture(
                    path,
                    format!(
                        "tensor `{name}` has {n} tokens but the metadata layout {}x{}x{} + {} text has {tokens}",
                        meta.layout.frames, meta.layout.height, meta.layout.width, meta.layout.text
                    ),
                ));
            }
            if h == 0 || d == 0 {
                return Err(SearchError::capture(
                    path,
                    format!("tensor `{name}` has an empty dimension {:?}", info.shape),
                ));
            }
            match &shape {
                None => shape = Some((name.clone(), [h, d])),
                Some((first, hd)) if *hd != [h, d] => {
                    return Err(SearchError::capture(
                        path,
                        format!(
                            "tensor `{name}` has {h} heads x head_dim {d}, but `{first}` has {} x {}",
                            hd[0], hd[1]
                        ),
                    ));
                }
                _ => {}
            }
            let (start, end) = (
                data_start.checked_add(info.data_offsets.0),
                data_start.checked_add(info.data_offsets.1),
            );
            let bytes = h
                .checked_mul(n)
                .and_then(|x| x.checked_mul(d))
                .and_then(|x| x.checked_mul(info.dtype.bitsize() / 8));
            let (Some(start), Some(end), Some(bytes)) = (start, end, bytes) else {
                return Err(SearchError::capture(
                    path,
                    format!("tensor `{name}`: offsets or size overflow"),
                ));
            };
            if start > end || end > mmap.len() || end - start != bytes {
                return Err(SearchError::capture(
                    path,
                    format!(
                        "tensor `{name}`: bytes {start}..{end} do not hold its {bytes} bytes inside the {}-byte file (truncated or corrupt)",
                        mmap.len()
                    ),
                ));
            }
            found.entry((step, layer)).or_default()[which] = Some(Slot {
                dtype: info.dtype,
                start,
                end,
            });
        }
        let Some((_, [heads, head_dim])) = shape else {
            return Err(SearchError::capture(path, "holds no q/k/v tensors"));
        };
        let steps: BTreeSet<usize> = found.keys().map(|(s, _)| *s).collect();
        let layers = found.keys().map(|(_, l)| *l).max().map_or(0, |l| l + 1);
        let mut slots = BTreeMap::new();
        for &step in &steps {
            for layer in 0..layers {
                let entry = found.remove(&(step, layer)).unwrap_or_default();
                let [q, k, v] = entry;
                let missing: Vec<&str> = [("q", &q), ("k", &k), ("v", &v)]
                    .iter()
                    .filter(|(_, s)| s.is_none())
                    .map(|(n, _)| *n)
                    .collect();
                if !missing.is_empty() {
                    let names: Vec<String> = missing
                        .iter()
                        .map(|m| format!("{m}.{step}.{layer}"))
                        .collect();
                    return Err(SearchError::capture(
                        path,
                        format!(
                            "missing tensor(s) {} (every captured step needs q, k, v for layers 0..{layers})",
                            names.join(", ")
                        ),
                    ));
                }
                slots.insert((step, layer), [q.unwrap(), k.unwrap(), v.unwrap()]);
            }
        }
        Ok(CaptureFile {
            path: path.to_owned(),
            mmap,
            meta,
            steps: steps.into_iter().collect(),
            layers,
            heads,
            head_dim,
            slots,
        })
    }

    /// File path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Metadata (layout and model name).
    pub fn meta(&self) -> &CaptureMeta {
        &self.meta
    }

    /// Captured steps, ascending.
    pub fn steps(&self) -> &[usize] {
        &self.steps
    }

    /// Number of layers (`0..layers` captured at every step).
    pub fn layers(&self) -> usize {
        self.layers
    }

    /// Attention heads.
    pub fn heads(&self) -> usize {
        self.heads
    }

    /// Head dimension.
    pub fn head_dim(&self) -> usize {
        self.head_dim
    }

    /// Reads (and converts to f32) q, k and v of `layer` at `step`.
    pub fn read(&self, step: usize, layer: usize) -> Result<LayerQkv, SearchError> {
        let slots = self.slots.get(&(step, layer)).ok_or_else(|| {
            SearchError::capture(
                &self.path,
                format!("has no capture for step {step}, layer {layer}"),
            )
        })?;
        let [q, k, v] = slots
            .clone()
            .map(|s| to_f32(&self.mmap[s.start..s.end], s.dtype));
        let (tokens, d) = (self.meta.layout.total_tokens(), self.head_dim);
        for (name, x) in [("q", &q), ("k", &k), ("v", &v)] {
            if let Some(i) = x.iter().position(|v| !v.is_finite()) {
                return Err(SearchError::capture(
                    &self.path,
                    format!(
                        "tensor `{name}.{step}.{layer}` holds {} at head {}, token {}, channel {}",
                        x[i],
                        i / (tokens * d),
                        (i / d) % tokens,
                        i % d
                    ),
                ));
            }
        }
        LayerQkv::new(
            self.heads,
            self.meta.layout.total_tokens(),
            self.head_dim,
            q,
            k,
            v,
        )
    }
}

fn to_f32(bytes: &[u8], dtype: Dtype) -> Vec<f32> {
    match dtype {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        other => unreachable!("dtype {other:?} rejected by CaptureFile::open"),
    }
}

fn to_bytes(x: &[f32], dtype: CaptureDtype) -> (Dtype, Vec<u8>) {
    match dtype {
        CaptureDtype::F32 => (Dtype::F32, x.iter().flat_map(|v| v.to_le_bytes()).collect()),
        CaptureDtype::F16 => (
            Dtype::F16,
            x.iter()
                .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
                .collect(),
        ),
        CaptureDtype::Bf16 => (
            Dtype::BF16,
            x.iter()
                .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
                .collect(),
        ),
    }
}

/// Writes a capture file atomically from `(step, layer, q/k/v)` entries.
///
/// Used by tests, by model-driven captures and by anyone producing captures from Rust;
/// `tools/write_captures.py` writes the same format from Python.
pub fn write_capture_file<'a>(
    path: &Path,
    meta: &CaptureMeta,
    entries: impl IntoIterator<Item = (usize, usize, &'a LayerQkv)>,
    dtype: CaptureDtype,
) -> Result<(), SearchError> {
    let mut buffers: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (step, layer, qkv) in entries {
        if qkv.tokens != meta.layout.total_tokens() {
            return Err(SearchError::capture(
                path,
                format!(
                    "capture for step {step}, layer {layer} has {} tokens, the layout has {}",
                    qkv.tokens,
                    meta.layout.total_tokens()
                ),
            ));
        }
        for (name, x) in [("q", &qkv.q), ("k", &qkv.k), ("v", &qkv.v)] {
            let (dt, bytes) = to_bytes(x, dtype);
            buffers.push((
                format!("{name}.{step}.{layer}"),
                dt,
                vec![qkv.heads, qkv.tokens, qkv.head_dim],
                bytes,
            ));
        }
    }
    let views = buffers
        .iter()
        .map(|(name, dt, shape, bytes)| {
            TensorView::new(*dt, shape.clone(), bytes).map(|v| (name.clone(), v))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| SearchError::capture(path, e.to_string()))?;
    let bytes = safetensors::serialize(views, Some(meta.to_metadata()))
        .map_err(|e| SearchError::capture(path, e.to_string()))?;
    vdit_patterns::write_atomic(path, &bytes).map_err(|source| SearchError::Io {
        path: path.to_owned(),
        source,
    })
}
