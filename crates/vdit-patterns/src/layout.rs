//! Where video and text tokens sit in an attention sequence.

use crate::PatternError;
use serde::{Deserialize, Serialize};
use std::ops::Range;

/// Where text tokens sit relative to video tokens in the joint self-attention sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TextPosition {
    /// Text tokens come first (CogVideoX: 226 tokens).
    Prefix,
    /// Text tokens come last (HunyuanVideo: 256 tokens, padded with a key mask).
    Suffix,
    /// No text in self-attention (Wan2.1: text only enters through cross-attention).
    None,
}

/// The token layout of one self-attention sequence, in post-patch tokens.
///
/// Video tokens are frame-major: video token `t*H*W + h*W + w` is frame `t`, row `h`,
/// column `w`. Text tokens, if any, form a contiguous prefix or suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct VideoLayout {
    /// Latent frames after temporal patching (T).
    pub frames: usize,
    /// Token rows per frame after spatial patching (H).
    pub height: usize,
    /// Token columns per frame after spatial patching (W).
    pub width: usize,
    /// Number of text tokens in the self-attention sequence (0 when absent).
    pub text: usize,
    /// Where the text tokens sit.
    pub text_position: TextPosition,
}

/// What a sequence position holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// A text token.
    Text,
    /// A video token at frame `t`, row `h`, column `w`.
    Video {
        /// Frame.
        t: usize,
        /// Row.
        h: usize,
        /// Column.
        w: usize,
    },
}

/// Upper bound on the sequence length, so that every index fits in `u32` block tables.
const MAX_TOKENS: usize = (u32::MAX / 2) as usize;

impl VideoLayout {
    /// A video-only layout (no text in self-attention).
    pub fn new(frames: usize, height: usize, width: usize) -> Result<Self, PatternError> {
        let layout = VideoLayout {
            frames,
            height,
            width,
            text: 0,
            text_position: TextPosition::None,
        };
        layout.validate()?;
        Ok(layout)
    }

    /// The same layout with `text` tokens at `position`. `text` must be 0 exactly when
    /// `position` is [`TextPosition::None`].
    pub fn with_text(mut self, text: usize, position: TextPosition) -> Result<Self, PatternError> {
        self.text = text;
        self.text_position = position;
        self.validate()?;
        Ok(self)
    }

    /// Checks the invariants of a layout (non-zero dimensions, text consistency, size).
    pub fn validate(&self) -> Result<(), PatternError> {
        if self.frames == 0 || self.height == 0 || self.width == 0 {
            return Err(PatternError::Layout(format!(
                "frames, height and width must be non-zero (got {}x{}x{})",
                self.frames, self.height, self.width
            )));
        }
        match (self.text_position, self.text) {
            (TextPosition::None, n) if n != 0 => {
                return Err(PatternError::Layout(format!(
                    "{n} text tokens given with text position `none`"
                )));
            }
            (TextPosition::Prefix | TextPosition::Suffix, 0) => {
                return Err(PatternError::Layout(
                    "text position prefix/suffix needs at least one text token".into(),
                ));
            }
            _ => {}
        }
        let video = self
            .frames
            .checked_mul(self.height)
            .and_then(|x| x.checked_mul(self.width));
        match video.and_then(|v| v.checked_add(self.text)) {
            Some(n) if n <= MAX_TOKENS => Ok(()),
            _ => Err(PatternError::Layout(format!(
                "sequence of {}x{}x{} video + {} text tokens is too long",
                self.frames, self.height, self.width, self.text
            ))),
        }
    }

    /// Tokens in one frame (H*W).
    pub fn tokens_per_frame(&self) -> usize {
        self.height * self.width
    }

    /// Number of video tokens (T*H*W).
    pub fn video_tokens(&self) -> usize {
        self.frames * self.tokens_per_frame()
    }

    /// Length of the whole self-attention sequence (video + text).
    pub fn total_tokens(&self) -> usize {
        self.video_tokens() + self.text
    }

    /// Sequence positions of the video tokens.
    pub fn video_range(&self) -> Range<usize> {
        let start = match self.text_position {
            TextPosition::Prefix => self.text,
            _ => 0,
        };
        start..start + self.video_tokens()
    }

    /// Sequence positions of the text tokens (empty when there is no text).
    pub fn text_range(&self) -> Range<usize> {
        match self.text_position {
            TextPosition::Prefix => 0..self.text,
            TextPosition::Suffix => self.video_tokens()..self.total_tokens(),
            TextPosition::None => 0..0,
        }
    }

    /// What the token at sequence position `i` is.
    ///
    /// # Panics
    /// If `i >= self.total_tokens()`.
    pub fn token(&self, i: usize) -> TokenKind {
        assert!(i < self.total_tokens(), "token {i} out of range");
        let video = self.video_range();
        if !video.contains(&i) {
            return TokenKind::Text;
        }
        let v = i - video.start;
        let hw = self.tokens_per_frame();
        TokenKind::Video {
            t: v / hw,
            h: (v % hw) / self.width,
            w: v % self.width,
        }
    }
}
