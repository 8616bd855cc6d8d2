//! A compiled layer uploaded once: concatenated CSR tables, per-head slots, permutation.

use crate::KernelError;
use cubecl::prelude::*;
use cubecl::server::Handle;
use vdit_patterns::{CompiledLayer, HeadSlot, TokenOrder};

/// Words per head in the head-info buffer: `[kind, row_ptr offset, permuted, nnz]`.
pub(crate) const HEAD_INFO_WORDS: usize = 4;

/// Host-side facts about one uploaded layer (kept for validation, scheduling and reports).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LayerMeta {
    pub heads: usize,
    pub tokens: usize,
    /// Key/value tokens (`tokens` for a layer compiled from a plan).
    pub kv_tokens: usize,
    pub block_size: usize,
    pub num_blocks: usize,
    /// Per head: number of computed blocks (0 for skip heads).
    pub head_nnz: Vec<usize>,
    /// Per head: `Some(table index)` or `None` for skip.
    pub head_table: Vec<Option<usize>>,
}

/// One [`CompiledLayer`] on the device, ready for [`crate::launch`]. Upload it once and
/// cache it per layer (and per layout): it holds
/// - `head_info`: 4 `u32` per head `[kind (0 skip, 1 table), row_ptr offset, permuted, nnz]`,
/// - `row_ptr`: every distinct table's `row_ptr` (length `num_blocks + 1`), concatenated,
///   with entries rebased to index the concatenated `col_idx` directly,
/// - `col_idx`: every distinct table's key-block indices, concatenated (heads sharing a
///   table share its rows),
/// - `perm`: the spatial-major permutation (`perm[p]` = natural token of table position `p`)
///   when some table is [`TokenOrder::SpatialMajor`], else a one-element placeholder.
pub struct DeviceLayer<R: Runtime> {
    pub(crate) head_info: Handle,
    pub(crate) row_ptr: Handle,
    pub(crate) col_idx: Handle,
    pub(crate) perm: Handle,
    pub(crate) dummy_mask: Handle,
    pub(crate) dummy_lse: Handle,
    pub(crate) rp_len: usize,
    pub(crate) col_len: usize,
    pub(crate) perm_len: usize,
    pub(crate) meta: LayerMeta,
    _runtime: std::marker::PhantomData<R>,
}

impl<R: Runtime> std::fmt::Debug for DeviceLayer<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceLayer")
            .field("meta", &self.meta)
            .finish()
    }
}

/// Host arrays of a layer, before upload (also used by tests and the bench export).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct HostLayer {
    pub head_info: Vec<u32>,
    pub row_ptr: Vec<u32>,
    pub col_idx: Vec<u32>,
    pub perm: Vec<u32>,
    pub meta: LayerMeta,
}

impl HostLayer {
    pub fn build(layer: &CompiledLayer) -> Result<Self, KernelError> {
        let tables = layer.tables();
        let heads = layer.heads();
        if heads == 0 {
            return Err(KernelError::Layer("layer has no heads".into()));
        }
        let first = tables.first();
        let (tokens, block_size) = first.map_or((0, 0), |t| (t.tokens(), t.block_size()));
        let layout = first.map(|t| *t.layout());
        let mut row_ptr = Vec::new();
        let mut col_idx: Vec<u32> = Vec::new();
        let mut table_rp = Vec::with_capacity(tables.len());
        let mut perm: Option<Vec<u32>> = None;
        let num_blocks = if block_size > 0 {
            tokens.div_ceil(block_size)
        } else {
            0
        };
        for (i, t) in tables.iter().enumerate() {
            if t.tokens() != tokens || t.block_size() != block_size || Some(*t.layout()) != layout {
                return Err(KernelError::Layer(format!(
                    "table {i} has a different layout or block size than table 0"
                )));
            }
            let rp = t.row_ptr();
            if rp.len() != num_blocks + 1
                || rp[0] != 0
                || *rp.last().unwrap() as usize != t.col_idx().len()
            {
                return Err(KernelError::Layer(format!(
                    "table {i} has an inconsistent row_ptr"
                )));
            }
            if rp.windows(2).any(|w| w[0] > w[1])
                || t.col_idx().iter().any(|&c| c as usize >= num_blocks)
            {
                return Err(KernelError::Layer(format!(
                    "table {i} has out-of-range entries"
                )));
            }
            let base = col_idx.len() as u32;
            table_rp.push(row_ptr.len() as u32);
            row_ptr.extend(rp.iter().map(|&x| x + base));
            col_idx.extend_from_slice(t.col_idx());
            if t.order() == TokenOrder::SpatialMajor && perm.is_none() {
                perm = Some(t.permutation());
            }
        }
        if !tables.is_empty() && !matches!(block_size, 16 | 32 | 64 | 128) {
            return Err(KernelError::BlockSize(block_size));
        }
        let mut head_info = Vec::with_capacity(heads * HEAD_INFO_WORDS);
        let mut head_nnz = Vec::with_capacity(heads);
        let mut head_table = Vec::with_capacity(heads);
        for slot in layer.slots() {
            match *slot {
                HeadSlot::Skip => {
                    head_info.extend_from_slice(&[0, 0, 0, 0]);
                    head_nnz.push(0);
                    head_table.push(None);
                }
                HeadSlot::Table(t) => {
                    let table = tables
                        .get(t)
                        .ok_or_else(|| KernelError::Layer(format!("head slot names table {t}")))?;
                    let permuted = (table.order() == TokenOrder::SpatialMajor) as u32;
                    head_info.extend_from_slice(&[1, table_rp[t], permuted, table.nnz() as u32]);
                    head_nnz.push(table.nnz());
                    head_table.push(Some(t));
                }
            }
        }
        if row_ptr.is_empty() {
            row_ptr.push(0);
        }
        if col_idx.is_empty() {
            col_idx.push(0);
        }
        Ok(HostLayer {
            head_info,
            row_ptr,
            col_idx,
            perm: perm.unwrap_or_else(|| vec![0]),
            meta: LayerMeta {
                heads,
                tokens,
                kv_tokens: tokens,
                block_size,
                num_blocks,
                head_nnz,
                head_table,
            },
        })
    }

    /// Every head computes every key block: `tokens` queries against `kv_tokens` keys in
    /// natural order (one shared table of `ceil(tokens / block_size)` rows, each listing
    /// all `ceil(kv_tokens / block_size)` key blocks).
    pub fn dense_cross(
        heads: usize,
        tokens: usize,
        kv_tokens: usize,
        block_size: usize,
    ) -> Result<Self, KernelError> {
        if heads == 0 || tokens == 0 || kv_tokens == 0 {
            return Err(KernelError::Layer(format!(
                "a dense cross layer needs heads, tokens and kv_tokens > 0 \
                 (got {heads}, {tokens}, {kv_tokens})"
            )));
        }
        if !matches!(block_size, 16 | 32 | 64 | 128) {
            return Err(KernelError::BlockSize(block_size));
        }
        let num_blocks = tokens.div_ceil(block_size);
        let kv_blocks = kv_tokens.div_ceil(block_size);
        let nnz = num_blocks * kv_blocks;
        if nnz >= u32::MAX as usize {
            return Err(KernelError::Layer(format!(
                "{nnz} blocks exceed 32-bit table indexing"
            )));
        }
        let row_ptr = (0..=num_blocks).map(|i| (i * kv_blocks) as u32).collect();
        let col_idx = (0..num_blocks).flat_map(|_| 0..kv_blocks as u32).collect();
        let head_info = (0..heads).flat_map(|_| [1, 0, 0, nnz as u32]).collect();
        Ok(HostLayer {
            head_info,
            row_ptr,
            col_idx,
            perm: vec![0],
            meta: LayerMeta {
                heads,
                tokens,
                kv_tokens,
                block_size,
                num_blocks,
                head_nnz: vec![nnz; heads],
                head_table: vec![Some(0); heads],
            },
        })
    }
}

impl<R: Runtime> DeviceLayer<R> {
    /// Uploads one compiled layer. All tables of a layer share one layout and block size
    /// (guaranteed by [`CompiledLayer::compile`]); block sizes 16, 32, 64 and 128 are
    /// accepted. A layer whose heads are all [`HeadSlot::Skip`] is valid (it only writes
    /// zeros); its token count is then taken from the problem at launch.
    pub fn upload(client: &ComputeClient<R>, layer: &CompiledLayer) -> Result<Self, KernelError> {
        Ok(Self::from_host(client, HostLayer::build(layer)?))
    }

    /// A dense cross-attention layer: `heads` heads of `tokens` queries, each attending to
    /// all `kv_tokens` keys (no permutation, no skipped heads). Run it with
    /// [`crate::SparseAttention::cross`] of the same lengths. `block_size` (16, 32, 64 or
    /// 128) is the query tile of the table; 64 or 128 select the tensor-core kernels.
    ///
    /// # Errors
    /// Zero sizes, an unsupported block size, a table past 32-bit indexing.
    pub fn dense_cross(
        client: &ComputeClient<R>,
        heads: usize,
        tokens: usize,
        kv_tokens: usize,
        block_size: usize,
    ) -> Result<Self, KernelError> {
        let host = HostLayer::dense_cross(heads, tokens, kv_tokens, block_size)?;
        Ok(Self::from_host(client, host))
    }

    fn from_host(client: &ComputeClient<R>, host: HostLayer) -> Self {
        let up = |v: &[u32]| client.create_from_slice(u32::as_bytes(v));
        DeviceLayer {
            head_info: up(&host.head_info),
            row_ptr: up(&host.row_ptr),
            col_idx: up(&host.col_idx),
            perm: up(&host.perm),
            dummy_mask: up(&[1]),
            dummy_lse: up(&[0]),
            rp_len: host.row_ptr.len(),
            col_len: host.col_idx.len(),
            perm_len: host.perm.len(),
            meta: host.meta,
            _runtime: std::marker::PhantomData,
        }
    }

    /// Number of heads.
    pub fn heads(&self) -> usize {
        self.meta.heads
    }

    /// Tokens of the layout (0 for an all-skip layer, which accepts any token count).
    pub fn tokens(&self) -> usize {
        self.meta.tokens
    }

    /// Key/value tokens (= [`Self::tokens`] except for [`Self::dense_cross`] layers).
    pub fn kv_tokens(&self) -> usize {
        self.meta.kv_tokens
    }

    /// Block size of the tables (0 for an all-skip layer).
    pub fn block_size(&self) -> usize {
        self.meta.block_size
    }

    /// Computed key blocks per head (0 for skip heads).
    pub fn head_nnz(&self) -> &[usize] {
        &self.meta.head_nnz
    }
}
