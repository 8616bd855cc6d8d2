//! Prompts to text embeddings the way the Wan pipeline does it (diffusers
//! `pipeline_wan.py`: `prompt_clean`, `_get_t5_prompt_embeds`).

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use vdit_models::ModelBackend;
use vdit_models::{ModelError, Result};

use crate::t5::T5Encoder;

/// diffusers' `prompt_clean`: HTML entities unescaped (twice, like `html.unescape` applied
/// twice), whitespace runs collapsed to one space, ends trimmed.
///
/// diffusers first runs `ftfy.fix_text` (mojibake repair); that step is not reproduced:
/// prompts that are valid UTF-8 text are unchanged by it except for rare repairs.
pub fn prompt_clean(text: &str) -> String {
    let text = html_unescape(&html_unescape(text));
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Unescapes the HTML entities prompts contain in practice: `&amp; &lt; &gt; &quot;
/// &apos; &nbsp;` and numeric `&#NN;` / `&#xHH;` references. Anything else is kept.
pub fn html_unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let Some(end) = rest[1..].find(';').map(|e| e + 1).filter(|e| *e <= 12) else {
            out.push('&');
            rest = &rest[1..];
            continue;
        };
        let name = &rest[1..end];
        let decoded = match name {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            "nbsp" => Some('\u{a0}'),
            n if n.starts_with("#x") || n.starts_with("#X") => u32::from_str_radix(&n[2..], 16)
                .ok()
                .and_then(char::from_u32),
            n if n.starts_with('#') => n[1..].parse::<u32>().ok().and_then(char::from_u32),
            _ => None,
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// A `tokenizers` tokenizer read from a `tokenizer/` folder (`tokenizer.json`), with the
/// pad id of its config.
#[derive(Debug, Clone)]
pub struct PromptTokenizer {
    /// `None`: the byte-level stand-in of [`PromptTokenizer::bytes`].
    inner: Option<tokenizers::Tokenizer>,
    pad_id: u32,
    path: PathBuf,
}

impl PromptTokenizer {
    /// Reads `dir/tokenizer.json`; the pad token is `pad_token` of
    /// `dir/tokenizer_config.json` when present, else `<pad>`.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        if !path.is_file() {
            return Err(ModelError::Config(format!(
                "{}: no tokenizer.json (the `tokenizers` crate needs the fast-tokenizer file)",
                dir.display()
            )));
        }
        let inner = tokenizers::Tokenizer::from_file(&path).map_err(|e| ModelError::Json {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let pad = std::fs::read_to_string(dir.join("tokenizer_config.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| match v.get("pad_token")? {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Object(o) => o.get("content")?.as_str().map(str::to_owned),
                _ => None,
            })
            .unwrap_or_else(|| "<pad>".into());
        let pad_id = inner.token_to_id(&pad).ok_or_else(|| {
            ModelError::Config(format!(
                "{}: pad token `{pad}` is not in the vocabulary",
                path.display()
            ))
        })?;
        Ok(PromptTokenizer {
            inner: Some(inner),
            pad_id,
            path,
        })
    }

    /// A byte-level stand-in for random-weight models without a tokenizer file: each
    /// UTF-8 byte `b` is token `b + 3`, then `</s>` = 1; pad = 0; 259 tokens.
    pub fn bytes() -> Self {
        PromptTokenizer {
            inner: None,
            pad_id: 0,
            path: PathBuf::from("<byte tokenizer>"),
        }
    }

    /// The pad token id.
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.as_ref().map_or(259, |t| t.get_vocab_size(true))
    }

    /// The `tokenizer.json` this came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Token ids of `text` with the special tokens (T5: a trailing `</s>`).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let Some(inner) = &self.inner else {
            let mut ids: Vec<u32> = text.bytes().map(|b| b as u32 + 3).collect();
            ids.push(1);
            return Ok(ids);
        };
        let enc = inner.encode(text, true).map_err(|e| {
            ModelError::Input(format!(
                "tokenizing {text:?} with {}: {e}",
                self.path.display()
            ))
        })?;
        Ok(enc.get_ids().to_vec())
    }

    /// Ids `[B, max_len]` padded with the pad id and the 0/1 mask, each prompt truncated to
    /// `max_len` tokens keeping its final special token (transformers
    /// `padding="max_length", truncation=True`). Prompts are used as given (clean them
    /// with [`prompt_clean`] first).
    pub fn encode_padded(
        &self,
        prompts: &[String],
        max_len: usize,
    ) -> Result<(Vec<i64>, Vec<i64>)> {
        if max_len == 0 {
            return Err(ModelError::Input(
                "the maximum token count must be positive".into(),
            ));
        }
        let mut ids = Vec::with_capacity(prompts.len() * max_len);
        let mut mask = Vec::with_capacity(prompts.len() * max_len);
        // The tokens of an empty text are the specials the post-processor appends.
        let no_special = self.encode("")?;
        for p in prompts {
            let mut t = self.encode(p)?;
            if t.len() > max_len {
                // Keep the specials the post-processor appends (e.g. `</s>`).
                let tail = no_special.len().min(max_len);
                let keep = max_len - tail;
                let specials = t.split_off(t.len() - tail);
                t.truncate(keep);
                t.extend(specials);
            }
            let n = t.len();
            ids.extend(t.iter().map(|&i| i as i64));
            ids.extend(std::iter::repeat_n(self.pad_id as i64, max_len - n));
            mask.extend(std::iter::repeat_n(1i64, n));
            mask.extend(std::iter::repeat_n(0i64, max_len - n));
        }
        Ok((ids, mask))
    }
}

/// The Wan pipeline's text side: tokenizer + encoder, prompts to `[B, max_len, D]`
/// embeddings with every position after a prompt's last token set to zero
/// (`_get_t5_prompt_embeds`: `u[:seq_len]` then zero padding; no mask downstream).
#[derive(Debug)]
pub struct PromptEncoder<B: Backend> {
    /// The tokenizer.
    pub tokenizer: PromptTokenizer,
    /// The encoder.
    pub encoder: T5Encoder<B>,
    /// Tokens per prompt (Wan: 512).
    pub max_len: usize,
}

impl<B: ModelBackend> PromptEncoder<B> {
    /// Pairs `tokenizer` and `encoder`, checking that every token id fits the encoder's
    /// embedding.
    pub fn new(tokenizer: PromptTokenizer, encoder: T5Encoder<B>, max_len: usize) -> Result<Self> {
        let (tv, ev) = (tokenizer.vocab_size(), encoder.config.vocab_size);
        if tv > ev {
            return Err(ModelError::Config(format!(
                "{} has {tv} tokens but the text encoder's vocabulary has {ev} rows: \
                 tokenizer and encoder do not match",
                tokenizer.path().display()
            )));
        }
        if max_len == 0 {
            return Err(ModelError::Input(
                "the maximum token count must be positive".into(),
            ));
        }
        Ok(PromptEncoder {
            tokenizer,
            encoder,
            max_len,
        })
    }

    /// Embeddings of `prompts` (cleaned with [`prompt_clean`]).
    ///
    /// # Shapes
    /// `B prompts -> [B, max_len, d_model]`.
    pub fn encode(&self, prompts: &[String], device: &B::Device) -> Result<Tensor<B, 3>> {
        let b = prompts.len();
        if b == 0 {
            return Err(ModelError::Input("no prompt given".into()));
        }
        let cleaned: Vec<String> = prompts.iter().map(|p| prompt_clean(p)).collect();
        let l = self.max_len;
        let (ids, mask) = self.tokenizer.encode_padded(&cleaned, l)?;
        let keep = Tensor::<B, 2, Int>::from_data(TensorData::new(mask.clone(), [b, l]), device);
        let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [b, l]), device);
        let out = self.encoder.forward(ids, keep.clone())?;
        // Zero every position after the valid tokens (the mask is a prefix of ones).
        let keep = keep.float().cast(out.dtype()).unsqueeze_dim::<3>(2);
        Ok(out * keep)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_unescapes_twice_and_collapses_whitespace() {
        assert_eq!(
            prompt_clean("  A dog &amp;amp; a cat\n\tplay   in &#x41;&#66; "),
            "A dog & a cat play in AB"
        );
        assert_eq!(prompt_clean("fish &chips; & more"), "fish &chips; & more");
        assert_eq!(prompt_clean(""), "");
    }
}
