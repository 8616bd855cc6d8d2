//! Candidate evaluation: run every candidate through the block-sparse attention path and
//! measure its error against dense attention, normalised by the layer's dense output
//! energy.
//!
//! Candidates run on the CPU path by default. A GPU backend can take over through a
//! [`LayerRunner`] passed explicitly (`ModelSource::with_layer_runner`, or the
//! `*_with` functions here; the xtask search passes one for `--backend cuda|wgpu`): the
//! kernels follow the same block tables, so the errors are the same up to the backend's
//! float precision.

use rayon::prelude::*;
use vdit_attention::cpu::{Dims, sparse_attention};
use vdit_patterns::{CompiledLayer, Pattern, TableCache, VideoLayout};

use crate::{LayerQkv, SearchError};

/// Dense attention output of every head, `[heads, tokens, head_dim]`.
pub fn dense_output(
    qkv: &LayerQkv,
    layout: &VideoLayout,
    block_size: usize,
) -> Result<Vec<f32>, SearchError> {
    dense_output_with(qkv, layout, block_size, &mut run)
}

/// A function that runs one layer on host buffers, as [`LayerRunner::run`].
pub type RunLayer<'a> = dyn FnMut(&LayerQkv, &CompiledLayer) -> Result<Vec<f32>, SearchError> + 'a;

/// [`dense_output`] through `run_layer` instead of the CPU path.
pub fn dense_output_with(
    qkv: &LayerQkv,
    layout: &VideoLayout,
    block_size: usize,
    run_layer: &mut RunLayer<'_>,
) -> Result<Vec<f32>, SearchError> {
    let layer = CompiledLayer::compile(&vec![Pattern::Dense; qkv.heads], layout, block_size)?;
    run_layer(qkv, &layer)
}

/// Runs one layer's block-sparse attention on host buffers (`[heads, tokens, head_dim]`,
/// scale `1/sqrt(head_dim)`), returning the output in the same layout.
pub trait LayerRunner: Send + Sync {
    /// Runs `layer` on `qkv`.
    fn run(&self, qkv: &LayerQkv, layer: &CompiledLayer) -> Result<Vec<f32>, SearchError>;
    /// Name for reports (e.g. `cuda bf16`).
    fn name(&self) -> String;
}

/// Runs one layer through `runner`, or the CPU path when it is `None`.
pub fn run_on(
    runner: Option<&dyn LayerRunner>,
    qkv: &LayerQkv,
    layer: &CompiledLayer,
) -> Result<Vec<f32>, SearchError> {
    match runner {
        Some(r) => r.run(qkv, layer),
        None => run(qkv, layer),
    }
}

/// Runs one layer on the CPU path (rayon block-sparse attention, f32).
pub fn run(qkv: &LayerQkv, layer: &CompiledLayer) -> Result<Vec<f32>, SearchError> {
    let dims = Dims {
        batch: 1,
        heads: qkv.heads,
        tokens: qkv.tokens,
        head_dim: qkv.head_dim,
    };
    let scale = 1.0 / (qkv.head_dim as f32).sqrt();
    Ok(sparse_attention(&qkv.q, &qkv.k, &qkv.v, dims, layer, scale, None).out)
}

/// Candidate evaluation on a Burn backend (the GPU kernels), in the model's dtype.
///
/// A layer's candidates are evaluated slot after slot on the same q/k/v: the last upload
/// is kept on the device and reused while the host buffers are the same
/// ([`crate::LayerQkv::fingerprint`]). Pass it to `ModelSource::with_layer_runner`.
pub struct BurnLayerRunner<B: vdit_attention::SparseAttentionBackend> {
    device: B::Device,
    dtype: burn::tensor::DType,
    uploaded: std::sync::Mutex<Option<(Vec<u64>, UploadedQkv<B>)>>,
}

type UploadedQkv<B> = [burn::tensor::Tensor<B, 4>; 3];

impl<B: vdit_attention::SparseAttentionBackend> BurnLayerRunner<B> {
    /// A runner on `device` computing in `dtype`.
    pub fn new(device: B::Device, dtype: burn::tensor::DType) -> Self {
        BurnLayerRunner {
            device,
            dtype,
            uploaded: std::sync::Mutex::new(None),
        }
    }

    fn upload(&self, qkv: &crate::LayerQkv) -> UploadedQkv<B> {
        use burn::tensor::{Tensor, TensorData};
        let key = qkv.fingerprint();
        let mut slot = self.uploaded.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((k, t)) = slot.as_ref()
            && *k == key
        {
            return t.clone();
        }
        *slot = None; // free the previous layer's upload first
        let shape = [1, qkv.heads, qkv.tokens, qkv.head_dim];
        let t = |x: &[f32]| {
            Tensor::<B, 4>::from_data(TensorData::new(x.to_vec(), shape), &self.device)
                .cast(self.dtype)
        };
        let tensors = [t(&qkv.q), t(&qkv.k), t(&qkv.v)];
        *slot = Some((key, tensors.clone()));
        tensors
    }
}

impl<B: vdit_attention::SparseAttentionBackend> LayerRunner for BurnLayerRunner<B>
where
    B::Device: Send + Sync,
{
    fn run(
        &self,
        qkv: &crate::LayerQkv,
        layer: &vdit_patterns::CompiledLayer,
    ) -> Result<Vec<f32>, crate::SearchError> {
        let [q, k, v] = self.upload(qkv);
        let prepared = vdit_attention::PreparedLayer::from_compiled(layer.clone());
        let err = |e: String| crate::SearchError::Source(format!("GPU candidate evaluation: {e}"));
        let out = B::sparse_attention(q, k, v, &prepared, &Default::default())
            .map_err(|e| err(e.to_string()))?;
        out.output
            .cast(burn::tensor::DType::F32)
            .into_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .map_err(|e| err(format!("{e:?}")))
    }

    fn name(&self) -> String {
        format!("{} {:?}", B::name(&self.device), self.dtype)
    }
}

/// Errors of one layer's candidates on one input.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerErrors {
    /// Mean square of each head's dense output (over tokens and head_dim).
    pub head_energy: Vec<f64>,
    /// Mean of `head_energy` over the heads: the normaliser.
    pub layer_energy: f64,
    /// `errors[h][c]`: `MSE(O_c, O_dense)` of head `h` under its candidate `c`, divided
    /// by `layer_energy`. A skipped head's error is its own energy over the layer's.
    pub errors: Vec<Vec<f64>>,
}

/// Normalised error, scale-free: MSE over the head's `tokens x head_dim` outputs,
/// divided by the mean energy of the layer's dense output over all heads. One epsilon
/// then means the same on every model and layer, and a head that contributes little to
/// its layer can be skipped even though its own relative error would be 100%.
///
/// A layer whose dense output is exactly zero gives error 0 to candidates that are
/// also zero and a huge error to any other. Non-finite inputs give NaN (never 0).
pub fn normalised(mse: f64, layer_energy: f64) -> f64 {
    if layer_energy.is_nan() {
        return f64::NAN;
    }
    mse / layer_energy.max(f64::MIN_POSITIVE)
}

/// Fails with [`SearchError::NonFinite`] naming the first non-finite value of a
/// `[heads, tokens, head_dim]` buffer. q, k and v are checked finite when read, so a
/// non-finite output means the scaled scores overflowed f32: an error of such a head
/// would be NaN, and NaN must never read as "no error".
fn check_finite(x: &[f32], what: &str, tokens: usize, head_dim: usize) -> Result<(), SearchError> {
    match x.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(i) => Err(SearchError::NonFinite(format!(
            "{what} is {} at head {}, token {} although q, k and v are finite: the attention \
             scores overflow f32 (q/k values too large); rescale the captures",
            x[i],
            i / (tokens * head_dim).max(1),
            (i / head_dim.max(1)) % tokens.max(1)
        ))),
    }
}

/// Evaluates `candidates[h]` (the candidate patterns of head `h`) on one input.
///
/// Candidates are run slot by slot: slot `j` runs candidate `j` of every head in one
/// multi-head call (heads with fewer candidates are skipped in that slot), so rayon
/// parallelism spans heads and query blocks. Skip candidates are not run: their error
/// is the head's energy.
pub fn candidate_errors(
    qkv: &LayerQkv,
    layout: &VideoLayout,
    block_size: usize,
    dense: &[f32],
    candidates: &[Vec<Pattern>],
    cache: &mut TableCache,
) -> Result<LayerErrors, SearchError> {
    candidate_errors_with(qkv, layout, block_size, dense, candidates, cache, &mut run)
}

/// [`candidate_errors`] through `run_layer` instead of the CPU path.
// Slot `j` indexes every head's candidate list and error row at once.
#[allow(clippy::needless_range_loop)]
pub fn candidate_errors_with(
    qkv: &LayerQkv,
    layout: &VideoLayout,
    block_size: usize,
    dense: &[f32],
    candidates: &[Vec<Pattern>],
    cache: &mut TableCache,
    run_layer: &mut RunLayer<'_>,
) -> Result<LayerErrors, SearchError> {
    let (h_n, n, d) = (qkv.heads, qkv.tokens, qkv.head_dim);
    let per_head = n * d;
    check_finite(dense, "dense attention output", n, d)?;
    let head_energy: Vec<f64> = (0..h_n)
        .map(|h| {
            dense[h * per_head..(h + 1) * per_head]
                .iter()
                .map(|x| (*x as f64) * (*x as f64))
                .sum::<f64>()
                / per_head as f64
        })
        .collect();
    let layer_energy = head_energy.iter().sum::<f64>() / h_n as f64;
    let mut errors: Vec<Vec<f64>> = candidates.iter().map(|c| vec![f64::NAN; c.len()]).collect();
    let slots = candidates.iter().map(Vec::len).max().unwrap_or(0);
    for j in 0..slots {
        let patterns: Vec<Pattern> = candidates
            .iter()
            .map(|c| c.get(j).cloned().unwrap_or(Pattern::Skip))
            .collect();
        for (h, p) in patterns.iter().enumerate() {
            if j < candidates[h].len() && matches!(p, Pattern::Skip) {
                errors[h][j] = normalised(head_energy[h], layer_energy);
            }
        }
        if patterns.iter().all(|p| matches!(p, Pattern::Skip)) {
            continue;
        }
        let layer = CompiledLayer::compile_cached(&patterns, layout, block_size, cache)?;
        let out = run_layer(qkv, &layer)?;
        check_finite(&out, &format!("candidate slot {j} output"), n, d)?;
        // One head per task: each head's sum keeps its sequential order.
        let mse: Vec<Option<f64>> = (0..h_n)
            .into_par_iter()
            .map(|h| {
                if j >= candidates[h].len() || matches!(patterns[h], Pattern::Skip) {
                    return None;
                }
                let range = h * per_head..(h + 1) * per_head;
                let sum = out[range.clone()]
                    .iter()
                    .zip(&dense[range])
                    .map(|(a, b)| {
                        let e = (*a as f64) - (*b as f64);
                        e * e
                    })
                    .sum::<f64>();
                Some(sum / per_head as f64)
            })
            .collect();
        for (h, m) in mse.into_iter().enumerate() {
            if let Some(m) = m {
                errors[h][j] = normalised(m, layer_energy);
            }
        }
    }
    Ok(LayerErrors {
        head_energy,
        layer_energy,
        errors,
    })
}
