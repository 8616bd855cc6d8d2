//! Token orders in which a block table can be expressed.
//!
//! Multi-diagonal heads attend "the same place in other frames". In the frame-major
//! order of the sequence that structure is a set of thin diagonals `H*W` apart, which
//! would waste whole blocks; in spatial-major order (`s*T + t`, with `s = h*W + w`) it is
//! a single band. Block tables of such heads are therefore expressed over the permuted
//! sequence, and kernels gather rows through [`TokenOrder::permutation`].

use crate::VideoLayout;
use serde::{Deserialize, Serialize};

/// The order of sequence positions a block table refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TokenOrder {
    /// The sequence as the model lays it out (frame-major video, text prefix/suffix).
    Natural,
    /// Video tokens reordered spatial-major (`s*T + t`); text tokens keep their place.
    SpatialMajor,
}

impl TokenOrder {
    /// `perm[p]` is the natural sequence position of position `p` in this order.
    ///
    /// It is a bijection on `0..layout.total_tokens()`; [`TokenOrder::inverse`] gives
    /// its inverse.
    pub fn permutation(self, layout: &VideoLayout) -> Vec<u32> {
        let n = layout.total_tokens();
        match self {
            TokenOrder::Natural => (0..n as u32).collect(),
            TokenOrder::SpatialMajor => {
                let mut perm: Vec<u32> = (0..n as u32).collect();
                let video = layout.video_range();
                let frames = layout.frames;
                let hw = layout.tokens_per_frame();
                for (p, slot) in perm[video.clone()].iter_mut().enumerate() {
                    let (s, t) = (p / frames, p % frames);
                    *slot = (video.start + t * hw + s) as u32;
                }
                perm
            }
        }
    }

    /// `inv[i]` is the position in this order of natural sequence position `i`.
    pub fn inverse(self, layout: &VideoLayout) -> Vec<u32> {
        let perm = self.permutation(layout);
        let mut inv = vec![0u32; perm.len()];
        for (p, &i) in perm.iter().enumerate() {
            inv[i as usize] = p as u32;
        }
        inv
    }
}
