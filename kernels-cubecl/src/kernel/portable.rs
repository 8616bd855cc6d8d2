//! Portable kernel: no `cmma`, no plane operations, shared-memory reductions only.
//!
//! One cube = `TQ = 16` query rows of one (batch, head); 64 units, 4 per row. A query block
//! of `B` rows is covered by `B / 16` cubes. Keys are processed in chunks of
//! `TK = min(32, B)` rows staged in shared memory (K, then V in the same buffer), so
//! shared memory stays under `4 * (16*D + 32*D + 16*32)` bytes = 26 KiB for `D = 128`
//! (lavapipe has 32 KiB). Each unit keeps `D/4` output columns of its row in registers.

use super::{MASKED, MASKED_THRESHOLD};
use cubecl::prelude::*;

/// Query rows per cube.
pub(crate) const TQ: usize = 16;
/// Units per query row.
pub(crate) const UPR: usize = 4;
/// Units per cube.
pub(crate) const UNITS: usize = TQ * UPR;

/// Key chunk for a block size.
pub(crate) fn tile_k(block_size: usize) -> usize {
    block_size.min(32)
}

#[cube]
fn natural(p: u32, permuted: bool, perm: &Array<u32>) -> u32 {
    let mut n = p;
    if permuted {
        n = perm[p as usize];
    }
    n
}

#[cube(launch)]
// The lse store nests a runtime condition inside a comptime one.
#[allow(clippy::too_many_arguments, clippy::collapsible_if)]
pub(crate) fn sparse_attn_portable<F: Float, M: Int>(
    q: &Array<F>,
    k: &Array<F>,
    v: &Array<F>,
    key_mask: &Array<M>,
    out: &mut Array<F>,
    lse: &mut Array<f32>,
    head_info: &Array<u32>,
    row_ptr: &Array<u32>,
    col_idx: &Array<u32>,
    perm: &Array<u32>,
    tokens: u32,
    kv_tokens: u32,
    heads: u32,
    scale: f32,
    neg_inf: f32,
    #[comptime] head_dim: usize,
    #[comptime] block_size: usize,
    #[comptime] has_mask: bool,
    #[comptime] want_lse: bool,
    #[define(F, M)] _dtypes: [StorageType; 2],
) {
    let masked = f32::new(MASKED);
    let masked_threshold = f32::new(MASKED_THRESHOLD);
    let tk = comptime!(tile_k(block_size));
    let cols = comptime!(head_dim / UPR);
    let chunks = comptime!(block_size / tk);

    let h = CUBE_POS_Y;
    let b = CUBE_POS_Z;
    let row0 = CUBE_POS_X * TQ as u32;
    let qb = row0 / block_size as u32;
    let unit = UNIT_POS;
    let r = unit / UPR as u32;
    let sub = unit % UPR as u32;

    let info = h as usize * 4;
    let kind = head_info[info];
    let rp = head_info[info + 1] as usize;
    let permuted = head_info[info + 2] == 1;

    let bh = b * heads + h;
    let base = bh as usize * tokens as usize * head_dim;
    let base_kv = bh as usize * kv_tokens as usize * head_dim;
    let p = row0 + r;
    let valid_row = p < tokens;
    let mut nat_row = 0u32;
    if valid_row {
        nat_row = natural(p, permuted, perm);
    }

    let mut acc = Array::<f32>::new(cols);
    #[unroll]
    for j in 0..cols {
        acc[j] = 0.0;
    }
    let mut m = masked;
    let mut l = 0.0f32;

    if kind != 0 {
        let mut sq = SharedMemory::<f32>::new(TQ * head_dim);
        let mut skv = SharedMemory::<f32>::new(tk * head_dim);
        let mut ss = SharedMemory::<f32>::new(TQ * tk);

        // Q tile, pre-scaled.
        for i in range_stepped(unit, (TQ * head_dim) as u32, UNITS as u32) {
            let rr = i / head_dim as u32;
            let d = i % head_dim as u32;
            let pp = row0 + rr;
            let mut val = 0.0f32;
            if pp < tokens {
                let n = natural(pp, permuted, perm);
                val = f32::cast_from(q[base + n as usize * head_dim + d as usize]) * scale;
            }
            sq[i as usize] = val;
        }

        let start = row_ptr[rp + qb as usize];
        let end = row_ptr[rp + qb as usize + 1];
        for e in start..end {
            let kb = col_idx[e as usize];
            for c in 0..chunks as u32 {
                let k0 = kb * block_size as u32 + c * tk as u32;
                if k0 < kv_tokens {
                    sync_cube();
                    // K chunk.
                    for i in range_stepped(unit, (tk * head_dim) as u32, UNITS as u32) {
                        let kr = i / head_dim as u32;
                        let d = i % head_dim as u32;
                        let kp = k0 + kr;
                        let mut val = 0.0f32;
                        if kp < kv_tokens {
                            let n = natural(kp, permuted, perm);
                            val = f32::cast_from(k[base_kv + n as usize * head_dim + d as usize]);
                        }
                        skv[i as usize] = val;
                    }
                    sync_cube();
                    // Scores: unit `sub` of row `r` computes keys sub, sub+4, ...
                    for cc in range_stepped(sub, tk as u32, UPR as u32) {
                        let kp = k0 + cc;
                        let mut s = masked;
                        if kp < kv_tokens {
                            let mut dot = 0.0f32;
                            for d in 0..head_dim {
                                dot +=
                                    sq[r as usize * head_dim + d] * skv[cc as usize * head_dim + d];
                            }
                            s = dot;
                            if comptime!(has_mask) {
                                let n = natural(kp, permuted, perm);
                                if key_mask[b as usize * kv_tokens as usize + n as usize]
                                    == M::from_int(0)
                                {
                                    s = masked;
                                }
                            }
                        }
                        ss[r as usize * tk + cc as usize] = s;
                    }
                    sync_cube();
                    // V chunk (reuses the K buffer).
                    for i in range_stepped(unit, (tk * head_dim) as u32, UNITS as u32) {
                        let kr = i / head_dim as u32;
                        let d = i % head_dim as u32;
                        let kp = k0 + kr;
                        let mut val = 0.0f32;
                        if kp < kv_tokens {
                            let n = natural(kp, permuted, perm);
                            val = f32::cast_from(v[base_kv + n as usize * head_dim + d as usize]);
                        }
                        skv[i as usize] = val;
                    }
                    sync_cube();
                    // Online softmax (every unit of a row computes the same m and l).
                    let mut mt = masked;
                    for cc in 0..tk {
                        mt = f32::max(mt, ss[r as usize * tk + cc]);
                    }
                    let m_new = f32::max(m, mt);
                    let alpha = f32::exp(m - m_new);
                    l *= alpha;
                    #[unroll]
                    for j in 0..cols {
                        acc[j] *= alpha;
                    }
                    for cc in 0..tk {
                        let s = ss[r as usize * tk + cc];
                        let mut pr = 0.0f32;
                        if s > masked_threshold {
                            pr = f32::exp(s - m_new);
                        }
                        l += pr;
                        #[unroll]
                        for j in 0..cols {
                            acc[j] += pr * skv[cc * head_dim + sub as usize + j * UPR];
                        }
                    }
                    m = m_new;
                }
            }
        }
    }

    if valid_row {
        let obase = base + nat_row as usize * head_dim;
        let has = l > 0.0;
        let mut inv = 0.0f32;
        if has {
            inv = 1.0 / l;
        }
        #[unroll]
        for j in 0..cols {
            out[obase + sub as usize + j * UPR] = F::cast_from(acc[j] * inv);
        }
        if comptime!(want_lse) {
            if sub == 0 {
                let mut val = neg_inf;
                if has {
                    val = m + f32::ln(l);
                }
                lse[bh as usize * tokens as usize + nat_row as usize] = val;
            }
        }
    }
}
