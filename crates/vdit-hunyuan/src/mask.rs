//! The text mask (`encoder_attention_mask`) and the attention masks derived from it,
//! exactly as diffusers builds them.
//!
//! - Token refiner (text-only self-attention): `M[i, j] = valid_i && valid_j`, with key
//!   0 always visible (`M[:, :, :, 0] = True`) so padded rows attend something.
//! - Joint attention (dual and single blocks, `[video | text]`): key `j` is valid iff
//!   `j < N_video + sum(mask[b])` — diffusers counts the valid tokens and assumes the
//!   text is right-padded; a mask with holes is treated by its count, as diffusers does.
//! - The refiner's pooled text is the mask-weighted mean of the raw text embeddings.

use burn::tensor::backend::Backend;
use burn::tensor::{Bool, DType, Tensor, TensorData};
use vdit_models::{ModelError, Result};

/// A host copy of `encoder_attention_mask` `[batch, text]` (`true` = valid token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextMask {
    valid: Vec<bool>,
    batch: usize,
    len: usize,
}

impl TextMask {
    /// A mask from row-major booleans `[batch, len]`.
    ///
    /// # Errors
    /// A length that is not `batch * len`, or a row without any valid token (diffusers
    /// would divide by zero in the pooled mean).
    pub fn new(valid: Vec<bool>, batch: usize, len: usize) -> Result<Self> {
        if valid.len() != batch * len || batch == 0 || len == 0 {
            return Err(ModelError::Input(format!(
                "encoder_attention_mask has {} values, expected a non-empty [{batch}, {len}]",
                valid.len()
            )));
        }
        if let Some(b) = (0..batch).find(|b| !valid[b * len..(b + 1) * len].iter().any(|v| *v)) {
            return Err(ModelError::Input(format!(
                "encoder_attention_mask row {b} has no valid text token"
            )));
        }
        Ok(TextMask { valid, batch, len })
    }

    /// Every token valid.
    pub fn all_valid(batch: usize, len: usize) -> Result<Self> {
        Self::new(vec![true; batch * len], batch, len)
    }

    /// The first `valid[b]` tokens of row `b` valid (right padding).
    pub fn right_padded(valid: &[usize], len: usize) -> Result<Self> {
        let v = valid
            .iter()
            .flat_map(|&n| (0..len).map(move |j| j < n))
            .collect();
        Self::new(v, valid.len(), len)
    }

    /// Reads a mask tensor (`true` = valid).
    pub fn from_tensor<B: Backend>(mask: Tensor<B, 2, Bool>) -> Result<Self> {
        let [batch, len] = mask.dims();
        let valid = mask.into_data().iter::<bool>().collect();
        Self::new(valid, batch, len)
    }

    /// Batch size.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Text length (padded).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false (a mask has at least one token).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Row-major validity `[batch * len]`.
    pub fn values(&self) -> &[bool] {
        &self.valid
    }

    /// Valid tokens per row (diffusers `encoder_attention_mask.sum(dim=1)`).
    pub fn counts(&self) -> Vec<usize> {
        self.valid
            .chunks(self.len)
            .map(|r| r.iter().filter(|v| **v).count())
            .collect()
    }

    /// Whether every token is valid.
    pub fn is_all_valid(&self) -> bool {
        self.valid.iter().all(|v| *v)
    }

    /// The mask as f32 `[batch, len, 1]` (1 = valid) for the pooled mean.
    pub fn weights<B: Backend>(&self, device: &B::Device) -> Tensor<B, 3> {
        let v: Vec<f32> = self.valid.iter().map(|&b| f32::from(u8::from(b))).collect();
        Tensor::from_data(
            TensorData::new(v, [self.batch, self.len, 1]),
            (device, DType::F32),
        )
    }

    /// The refiner's attention mask for Burn (`true` = masked out), `[batch, heads, len,
    /// len]`: masked unless both tokens are valid, key 0 never masked.
    pub fn refiner_mask<B: Backend>(&self, heads: usize, device: &B::Device) -> Tensor<B, 4, Bool> {
        let (b, l) = (self.batch, self.len);
        let mut m = Vec::with_capacity(b * l * l);
        for r in 0..b {
            let row = &self.valid[r * l..(r + 1) * l];
            for &qi in row {
                for (j, &kj) in row.iter().enumerate() {
                    m.push(!(j == 0 || (qi && kj)));
                }
            }
        }
        let t: Tensor<B, 4, Bool> = Tensor::from_data(TensorData::new(m, [b, 1, l, l]), device);
        t.expand([b, heads, l, l])
    }

    /// The joint sequence's key padding `[batch, video + len]` (`true` = valid key), or
    /// `None` when every key is valid (then dense attention needs no mask).
    pub fn key_padding<B: Backend>(
        &self,
        video_tokens: usize,
        device: &B::Device,
    ) -> Option<Tensor<B, 2, Bool>> {
        if self.is_all_valid() {
            return None;
        }
        let n = video_tokens + self.len;
        let v: Vec<bool> = self
            .counts()
            .into_iter()
            .flat_map(|c| (0..n).map(move |j| j < video_tokens + c))
            .collect();
        Some(Tensor::from_data(
            TensorData::new(v, [self.batch, n]),
            device,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    #[test]
    fn refiner_mask_follows_diffusers() {
        // Row 0: 3 of 4 valid; row 1: 1 of 4 valid.
        let m = TextMask::right_padded(&[3, 1], 4).unwrap();
        let t = m.refiner_mask::<Flex>(2, &Default::default());
        assert_eq!(t.dims(), [2, 2, 4, 4]);
        let v: Vec<bool> = t.into_data().iter::<bool>().collect();
        let at = |b: usize, h: usize, i: usize, j: usize| v[((b * 2 + h) * 4 + i) * 4 + j];
        for h in 0..2 {
            // Key 0 is visible from every row, padded rows included.
            for i in 0..4 {
                assert!(!at(0, h, i, 0) && !at(1, h, i, 0));
            }
            // Valid pairs visible, anything touching a padded token masked.
            assert!(!at(0, h, 1, 2));
            assert!(at(0, h, 1, 3) && at(0, h, 3, 1));
            assert!(at(1, h, 0, 1) && at(1, h, 2, 2));
        }
    }

    #[test]
    fn key_padding_uses_the_valid_count_like_diffusers() {
        let device = Default::default();
        assert!(
            TextMask::all_valid(2, 3)
                .unwrap()
                .key_padding::<Flex>(5, &device)
                .is_none()
        );
        // A mask with a hole: diffusers counts 2 valid tokens and keeps the first two.
        let m = TextMask::new(vec![true, false, true], 1, 3).unwrap();
        assert_eq!(m.counts(), vec![2]);
        let p = m.key_padding::<Flex>(2, &device).unwrap();
        let v: Vec<bool> = p.into_data().iter::<bool>().collect();
        assert_eq!(v, vec![true, true, true, true, false]);
    }

    #[test]
    fn empty_rows_and_bad_sizes_are_errors() {
        assert!(TextMask::new(vec![true, false, false, false], 2, 2).is_err());
        assert!(TextMask::new(vec![true; 3], 2, 2).is_err());
        assert!(TextMask::right_padded(&[0], 4).is_err());
    }
}
