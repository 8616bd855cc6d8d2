//! The five per-head attention patterns and their token-level semantics.
//!
//! Parameters are stored relative to the layout (fractions of a frame or of the video)
//! so that a plan searched at one resolution carries to another. [`Pattern::allows`]
//! is the token-level rule; [`crate::BlockTable::compile`] turns it into block masks
//! (a block is computed whole when it contains at least one allowed pair).

use crate::{PatternError, TokenKind, TokenOrder, VideoLayout};
use serde::{Deserialize, Serialize};
use std::ops::Range;

/// A span of key columns, as fractions `[start, end)` of the video token sequence
/// (frame-major), so `TokenSpan { start: 0.0, end: 1.0 / T }` is the first frame.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TokenSpan {
    /// Start, as a fraction of the video tokens in `[0, 1)`.
    pub start: f64,
    /// End (exclusive), as a fraction of the video tokens in `(start, 1]`.
    pub end: f64,
}

impl TokenSpan {
    /// The span covering video tokens `range` of a sequence of `video_tokens`.
    pub fn from_tokens(range: Range<usize>, video_tokens: usize) -> Self {
        TokenSpan {
            start: range.start as f64 / video_tokens as f64,
            end: range.end as f64 / video_tokens as f64,
        }
    }

    /// The video-token range (frame-major video indices) this span covers in a video of
    /// `video_tokens` tokens; never empty.
    pub fn resolve(&self, video_tokens: usize) -> Range<usize> {
        let n = video_tokens as f64;
        // The epsilon makes `from_tokens` followed by `resolve` exact despite rounding.
        let start = ((self.start * n + 1e-6).floor() as usize).min(video_tokens - 1);
        let end = ((self.end * n - 1e-6).ceil() as usize).clamp(start + 1, video_tokens);
        start..end
    }
}

/// One head's attention pattern.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pattern {
    /// Every query attends every key.
    Dense,
    /// The head is not computed; its attention output is zero.
    Skip,
    /// Video query `i` attends video key `j` when `|i - j| <= band * H*W` (tokens,
    /// rounded), i.e. `band` is a fraction of one frame.
    Diagonal {
        /// Half-width of the band as a fraction of the tokens per frame (`>= 0`).
        band: f64,
    },
    /// Query `(t, h, w)` attends key `(t', h', w')` when `|s - s'| <= spatial_band * H*W`
    /// (tokens, rounded; `s = h*W + w`) and `|t - t'| <= frame_reach`: the same place
    /// in nearby frames. Compiled in [`TokenOrder::SpatialMajor`], where it is a band.
    MultiDiagonal {
        /// Spatial half-width as a fraction of the tokens per frame, in `[0, 1]`.
        spatial_band: f64,
        /// How many frames away a key may be.
        frame_reach: u32,
    },
    /// Every video query attends the key columns in `columns` (global tokens), plus,
    /// when `band` is set, a diagonal band as in [`Pattern::Diagonal`].
    VerticalStripe {
        /// Key column spans (at least one).
        columns: Vec<TokenSpan>,
        /// Optional diagonal half-width as a fraction of the tokens per frame.
        band: Option<f64>,
    },
}

/// The name of a pattern without its parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PatternKind {
    /// [`Pattern::Dense`].
    Dense,
    /// [`Pattern::Skip`].
    Skip,
    /// [`Pattern::Diagonal`].
    Diagonal,
    /// [`Pattern::MultiDiagonal`].
    MultiDiagonal,
    /// [`Pattern::VerticalStripe`].
    VerticalStripe,
}

impl PatternKind {
    /// The snake_case name used in plans and reports (`multi_diagonal`, ...).
    pub fn name(self) -> &'static str {
        match self {
            PatternKind::Dense => "dense",
            PatternKind::Skip => "skip",
            PatternKind::Diagonal => "diagonal",
            PatternKind::MultiDiagonal => "multi_diagonal",
            PatternKind::VerticalStripe => "vertical_stripe",
        }
    }
}

impl std::fmt::Display for PatternKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Band parameters resolved to token counts for one layout.
#[derive(Debug, Clone)]
pub(crate) enum Resolved {
    Dense,
    Skip,
    Diagonal {
        band: usize,
    },
    MultiDiagonal {
        spatial: usize,
        frames: usize,
    },
    Stripe {
        columns: Vec<Range<usize>>,
        band: Option<usize>,
    },
}

fn check_fraction(
    pattern: &'static str,
    field: &'static str,
    v: f64,
    max: f64,
) -> Result<(), PatternError> {
    if !v.is_finite() || v < 0.0 || v > max {
        return Err(PatternError::Parameter {
            pattern,
            field,
            reason: format!("{v} is not a finite number in [0, {max}]"),
        });
    }
    Ok(())
}

/// Largest accepted band, in frames: wider bands are dense attention.
const MAX_BAND_FRAMES: f64 = 1.0e6;

impl Pattern {
    /// The pattern's kind.
    pub fn kind(&self) -> PatternKind {
        match self {
            Pattern::Dense => PatternKind::Dense,
            Pattern::Skip => PatternKind::Skip,
            Pattern::Diagonal { .. } => PatternKind::Diagonal,
            Pattern::MultiDiagonal { .. } => PatternKind::MultiDiagonal,
            Pattern::VerticalStripe { .. } => PatternKind::VerticalStripe,
        }
    }

    /// The token order its block table is expressed in.
    pub fn order(&self) -> TokenOrder {
        match self {
            Pattern::MultiDiagonal { .. } => TokenOrder::SpatialMajor,
            _ => TokenOrder::Natural,
        }
    }

    /// Checks that every parameter is finite and in range.
    pub fn validate(&self) -> Result<(), PatternError> {
        match self {
            Pattern::Dense | Pattern::Skip => Ok(()),
            Pattern::Diagonal { band } => {
                check_fraction("diagonal", "band", *band, MAX_BAND_FRAMES)
            }
            Pattern::MultiDiagonal { spatial_band, .. } => {
                check_fraction("multi_diagonal", "spatial_band", *spatial_band, 1.0)
            }
            Pattern::VerticalStripe { columns, band } => {
                if columns.is_empty() {
                    return Err(PatternError::Parameter {
                        pattern: "vertical_stripe",
                        field: "columns",
                        reason: "needs at least one column span".into(),
                    });
                }
                for c in columns {
                    check_fraction("vertical_stripe", "columns.start", c.start, 1.0)?;
                    check_fraction("vertical_stripe", "columns.end", c.end, 1.0)?;
                    if c.end <= c.start {
                        return Err(PatternError::Parameter {
                            pattern: "vertical_stripe",
                            field: "columns",
                            reason: format!("span end {} is not after start {}", c.end, c.start),
                        });
                    }
                }
                if let Some(b) = band {
                    check_fraction("vertical_stripe", "band", *b, MAX_BAND_FRAMES)?;
                }
                Ok(())
            }
        }
    }

    pub(crate) fn resolve(&self, layout: &VideoLayout) -> Resolved {
        let hw = layout.tokens_per_frame() as f64;
        let band_tokens = |b: f64| -> usize {
            let t = (b * hw).round();
            if t >= layout.total_tokens() as f64 {
                layout.total_tokens()
            } else {
                t as usize
            }
        };
        match self {
            Pattern::Dense => Resolved::Dense,
            Pattern::Skip => Resolved::Skip,
            Pattern::Diagonal { band } => Resolved::Diagonal {
                band: band_tokens(*band),
            },
            Pattern::MultiDiagonal {
                spatial_band,
                frame_reach,
            } => Resolved::MultiDiagonal {
                spatial: band_tokens(*spatial_band),
                frames: *frame_reach as usize,
            },
            Pattern::VerticalStripe { columns, band } => Resolved::Stripe {
                columns: columns
                    .iter()
                    .map(|c| c.resolve(layout.video_tokens()))
                    .collect(),
                band: band.map(band_tokens),
            },
        }
    }

    /// Token-level rule: may query at natural position `q` attend key at position `k`?
    ///
    /// Text rows and columns are always allowed except for [`Pattern::Skip`]. This is the
    /// reference the block tables are tested against; it is O(1) per pair but resolves
    /// parameters on every call, so it is meant for tests and small layouts.
    pub fn allows(&self, layout: &VideoLayout, q: usize, k: usize) -> bool {
        self.resolve(layout).allows(layout, q, k)
    }
}

impl Resolved {
    pub(crate) fn allows(&self, layout: &VideoLayout, q: usize, k: usize) -> bool {
        match self {
            Resolved::Skip => return false,
            Resolved::Dense => return true,
            _ => {}
        }
        let (TokenKind::Video { t: tq, .. }, TokenKind::Video { t: tk, .. }) =
            (layout.token(q), layout.token(k))
        else {
            return true;
        };
        let vs = layout.video_range().start;
        let (i, j) = (q - vs, k - vs);
        let hw = layout.tokens_per_frame();
        match self {
            Resolved::Diagonal { band } => i.abs_diff(j) <= *band,
            Resolved::MultiDiagonal { spatial, frames } => {
                (i % hw).abs_diff(j % hw) <= *spatial && tq.abs_diff(tk) <= *frames
            }
            Resolved::Stripe { columns, band } => {
                columns.iter().any(|c| c.contains(&j)) || band.is_some_and(|b| i.abs_diff(j) <= b)
            }
            Resolved::Dense | Resolved::Skip => unreachable!(),
        }
    }
}
