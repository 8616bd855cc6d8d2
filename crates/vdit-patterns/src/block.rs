//! Compilation of a pattern to a block-sparse table for one layout and block size.

use crate::pattern::Resolved;
use crate::{Pattern, PatternError, PatternKind, TokenOrder, VideoLayout};
use std::ops::Range;

/// Block sizes a [`BlockTable`] may be compiled for. Plans (and the GPU kernels) use 64
/// or 128; the smaller sizes exist so that tests can exercise many blocks on tiny layouts.
pub const SUPPORTED_BLOCK_SIZES: [usize; 6] = [8, 16, 32, 64, 128, 256];

/// A pattern compiled for one layout and block size: which key blocks each query block
/// computes, in compressed sparse row form.
///
/// Positions are in [`BlockTable::order`]: block `b` covers positions
/// `b*B .. min((b+1)*B, tokens)` of the sequence permuted by
/// `order.permutation(layout)` (the identity for [`TokenOrder::Natural`]). The last
/// block is ragged when the token count is not a multiple of `B`. A computed block is
/// computed whole. Query blocks with no key block produce zero output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockTable {
    layout: VideoLayout,
    block_size: usize,
    order: TokenOrder,
    kind: PatternKind,
    row_ptr: Vec<u32>,
    col_idx: Vec<u32>,
}

impl BlockTable {
    /// Compiles `pattern` for `layout` with square blocks of `block_size` tokens.
    ///
    /// The table contains exactly the (query block, key block) pairs that hold at least
    /// one token pair allowed by [`Pattern::allows`]. Runs in
    /// O(query blocks x (key blocks + pattern extent)), well under a second at the real
    /// layouts of the spec.
    pub fn compile(
        pattern: &Pattern,
        layout: &VideoLayout,
        block_size: usize,
    ) -> Result<Self, PatternError> {
        if !SUPPORTED_BLOCK_SIZES.contains(&block_size) {
            return Err(PatternError::BlockSize(block_size));
        }
        layout.validate()?;
        pattern.validate()?;
        let resolved = pattern.resolve(layout);
        let n = layout.total_tokens();
        let nb = n.div_ceil(block_size);
        let text = layout.text_range();
        let video = layout.video_range();
        let vs = video.start;
        let blocks_of = |r: &Range<usize>| (r.start / block_size)..r.end.div_ceil(block_size);

        let mut row_ptr = Vec::with_capacity(nb + 1);
        let mut col_idx: Vec<u32> = Vec::new();
        row_ptr.push(0u32);
        let mut marks = vec![false; nb];
        let mut mark = |marks: &mut [bool], r: Range<usize>| {
            if r.start < r.end {
                for m in &mut marks[blocks_of(&r)] {
                    *m = true;
                }
            }
        };

        for qb in 0..nb {
            let rows = qb * block_size..((qb + 1) * block_size).min(n);
            marks.fill(false);
            let touches_text = rows.start < text.end && text.start < rows.end;
            match &resolved {
                Resolved::Skip => {}
                Resolved::Dense => marks.fill(true),
                _ if touches_text => marks.fill(true),
                other => {
                    // Text columns are always computed.
                    mark(&mut marks, text.clone());
                    let (i0, i1) = (rows.start - vs, rows.end - vs);
                    let v = layout.video_tokens();
                    let band = |marks: &mut [bool], b: usize| {
                        mark(marks, vs + i0.saturating_sub(b)..vs + (i1 + b).min(v));
                    };
                    match other {
                        Resolved::Diagonal { band: b } => band(&mut marks, *b),
                        Resolved::Stripe { columns, band: b } => {
                            for c in columns {
                                mark(&mut marks, vs + c.start..vs + c.end);
                            }
                            if let Some(b) = b {
                                band(&mut marks, *b);
                            }
                        }
                        Resolved::MultiDiagonal { spatial, frames } => mark_multi_diagonal(
                            &mut marks,
                            layout,
                            i0..i1,
                            *spatial,
                            *frames,
                            &mut mark,
                        ),
                        Resolved::Dense | Resolved::Skip => unreachable!(),
                    }
                }
            }
            col_idx.extend(
                marks
                    .iter()
                    .enumerate()
                    .filter(|(_, m)| **m)
                    .map(|(k, _)| k as u32),
            );
            row_ptr.push(col_idx.len() as u32);
        }
        Ok(BlockTable {
            layout: *layout,
            block_size,
            order: pattern.order(),
            kind: pattern.kind(),
            row_ptr,
            col_idx,
        })
    }

    /// The layout the table was compiled for.
    pub fn layout(&self) -> &VideoLayout {
        &self.layout
    }

    /// Block size B (query and key blocks are B x B tokens, the last one ragged).
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// Token order the block indices refer to.
    pub fn order(&self) -> TokenOrder {
        self.order
    }

    /// Kind of the pattern the table was compiled from.
    pub fn kind(&self) -> PatternKind {
        self.kind
    }

    /// Sequence length.
    pub fn tokens(&self) -> usize {
        self.layout.total_tokens()
    }

    /// Number of query blocks (= number of key blocks).
    pub fn num_blocks(&self) -> usize {
        self.row_ptr.len() - 1
    }

    /// CSR row pointers: query block `q` computes `col_idx[row_ptr[q]..row_ptr[q+1]]`.
    pub fn row_ptr(&self) -> &[u32] {
        &self.row_ptr
    }

    /// CSR key-block indices, ascending within each row.
    pub fn col_idx(&self) -> &[u32] {
        &self.col_idx
    }

    /// Key blocks computed by query block `q`.
    pub fn row(&self, q: usize) -> &[u32] {
        &self.col_idx[self.row_ptr[q] as usize..self.row_ptr[q + 1] as usize]
    }

    /// Number of computed blocks.
    pub fn nnz(&self) -> usize {
        self.col_idx.len()
    }

    /// Positions (in [`BlockTable::order`]) covered by block `b`.
    pub fn block_range(&self, b: usize) -> Range<usize> {
        let n = self.tokens();
        (b * self.block_size).min(n)..((b + 1) * self.block_size).min(n)
    }

    /// Computed blocks / all blocks, in `[0, 1]`.
    pub fn density(&self) -> f64 {
        let nb = self.num_blocks();
        self.nnz() as f64 / (nb * nb) as f64
    }

    /// Query-key token pairs inside computed blocks (ragged blocks counted exactly).
    pub fn computed_pairs(&self) -> u64 {
        (0..self.num_blocks())
            .map(|q| {
                let rows = self.block_range(q).len() as u64;
                let cols: u64 = self
                    .row(q)
                    .iter()
                    .map(|&k| self.block_range(k as usize).len() as u64)
                    .sum();
                rows * cols
            })
            .sum()
    }

    /// Floating point operations of the attention this table computes for one head:
    /// `4 * head_dim` per computed query-key pair (QK^T and PV, multiply-add = 2).
    pub fn flops(&self, head_dim: usize) -> u64 {
        4 * head_dim as u64 * self.computed_pairs()
    }

    /// The permutation `perm[p] = natural position of table position p`.
    pub fn permutation(&self) -> Vec<u32> {
        self.order.permutation(&self.layout)
    }

    /// Dense token-level mask in natural order, row-major `[query][key]`: `true` where
    /// the pair lies in a computed block. For tests and small layouts only (L x L bytes).
    pub fn token_mask(&self) -> Vec<bool> {
        let n = self.tokens();
        let perm = self.permutation();
        let mut mask = vec![false; n * n];
        for q in 0..self.num_blocks() {
            for &k in self.row(q) {
                for p in self.block_range(q) {
                    let row = perm[p] as usize * n;
                    for pk in self.block_range(k as usize) {
                        mask[row + perm[pk] as usize] = true;
                    }
                }
            }
        }
        mask
    }
}

/// Marks the key blocks of a multi-diagonal query block whose video rows, in
/// spatial-major order, are `rows` (`u = s*T + t`).
fn mark_multi_diagonal(
    marks: &mut [bool],
    layout: &VideoLayout,
    rows: Range<usize>,
    spatial: usize,
    reach: usize,
    mark: &mut impl FnMut(&mut [bool], Range<usize>),
) {
    let frames = layout.frames;
    let hw = layout.tokens_per_frame();
    let vs = layout.video_range().start;
    let (s0, s1) = (rows.start / frames, (rows.end - 1) / frames);
    for s in s0..=s1 {
        let ta = if s == s0 { rows.start % frames } else { 0 };
        let tb = if s == s1 {
            (rows.end - 1) % frames
        } else {
            frames - 1
        };
        let (ka, kb) = (ta.saturating_sub(reach), (tb + reach).min(frames - 1));
        let (sa, sb) = (s.saturating_sub(spatial), (s + spatial).min(hw - 1));
        if ka == 0 && kb == frames - 1 {
            // Every frame of each neighbour: one contiguous run in spatial-major order.
            mark(marks, vs + sa * frames..vs + (sb + 1) * frames);
        } else {
            for s2 in sa..=sb {
                mark(marks, vs + s2 * frames + ka..vs + s2 * frames + kb + 1);
            }
        }
    }
}
