//! Reading diffusers `config.json` files.
//!
//! Two tiers (candle/burn convention): each model crate has a serde struct whose fields
//! are exactly the diffusers `config.json` keys with diffusers' defaults, parsed with
//! [`DiffusersConfig::parse`], and converts it into its own runtime config. This module
//! only reads the file, detects the model class from `_class_name`, and gives typed
//! parse errors.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use crate::{ModelError, Result};

/// Largest width (heads, head dim, channels, FFN and text widths, patch sizes) a config
/// may declare: 2^20, far above any real model (Wan2.1-14B has hidden size 5,120), so
/// that a corrupt config cannot ask for an impossible allocation.
pub const MAX_CONFIG_DIM: usize = 1 << 20;

/// Most layers a config may declare (real models have at most 60).
pub const MAX_CONFIG_LAYERS: usize = 10_000;

/// Checks config sizes: each `(key, value)` of `dims` is at most [`MAX_CONFIG_DIM`],
/// each of `layers` at most [`MAX_CONFIG_LAYERS`]; errors name the key.
pub fn check_config_sizes(dims: &[(&str, usize)], layers: &[(&str, usize)]) -> Result<()> {
    for (list, max) in [(dims, MAX_CONFIG_DIM), (layers, MAX_CONFIG_LAYERS)] {
        for (key, v) in list {
            if *v > max {
                return Err(ModelError::Config(format!(
                    "{key} = {v} is above the limit of {max}"
                )));
            }
        }
    }
    Ok(())
}

/// The denoiser classes this project knows, by diffusers `_class_name`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ModelClass {
    /// `WanTransformer3DModel` (Wan2.1 T2V 1.3B / 14B): crate `vdit-wan`.
    Wan,
    /// `HunyuanVideoTransformer3DModel`: crate `vdit-hunyuan`.
    HunyuanVideo,
    /// `CogVideoXTransformer3DModel` (CogVideoX1.5-5B): crate `vdit-cogvideox`.
    CogVideoX,
}

impl ModelClass {
    /// Every known class.
    pub const ALL: [ModelClass; 3] = [
        ModelClass::Wan,
        ModelClass::HunyuanVideo,
        ModelClass::CogVideoX,
    ];

    /// The diffusers `_class_name`.
    pub fn class_name(self) -> &'static str {
        match self {
            ModelClass::Wan => "WanTransformer3DModel",
            ModelClass::HunyuanVideo => "HunyuanVideoTransformer3DModel",
            ModelClass::CogVideoX => "CogVideoXTransformer3DModel",
        }
    }

    /// The short name used on the command line and in fixture folders
    /// (`wan`, `hunyuan`, `cogvideox`).
    pub fn short_name(self) -> &'static str {
        match self {
            ModelClass::Wan => "wan",
            ModelClass::HunyuanVideo => "hunyuan",
            ModelClass::CogVideoX => "cogvideox",
        }
    }

    /// The class with diffusers name `name`.
    pub fn from_class_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.class_name() == name)
    }
}

/// A parsed `config.json`: its path, `_class_name` and the raw JSON object.
#[derive(Debug, Clone)]
pub struct DiffusersConfig {
    path: PathBuf,
    class_name: Option<String>,
    raw: serde_json::Value,
}

impl DiffusersConfig {
    /// Reads `dir/config.json`.
    pub fn from_model_dir(dir: &Path) -> Result<Self> {
        Self::from_file(&dir.join("config.json"))
    }

    /// Reads a config file (at most [`vdit_patterns::MAX_TEXT_BYTES`]).
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = vdit_patterns::read_text_capped(path, vdit_patterns::MAX_TEXT_BYTES)
            .map_err(|e| ModelError::io(path, e))?;
        Self::from_json_str(&text, path)
    }

    /// Parses config JSON text; `path` is only used in error messages.
    pub fn from_json_str(text: &str, path: &Path) -> Result<Self> {
        let raw: serde_json::Value = serde_json::from_str(text).map_err(|e| ModelError::Json {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        if !raw.is_object() {
            return Err(ModelError::Json {
                path: path.to_owned(),
                message: "expected a JSON object".into(),
            });
        }
        let class_name = raw
            .get("_class_name")
            .and_then(|v| v.as_str())
            .map(str::to_owned);
        Ok(DiffusersConfig {
            path: path.to_owned(),
            class_name,
            raw,
        })
    }

    /// The file this config came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `_class_name`, if present.
    pub fn class_name(&self) -> Option<&str> {
        self.class_name.as_deref()
    }

    /// The raw JSON object.
    pub fn raw(&self) -> &serde_json::Value {
        &self.raw
    }

    /// The model class named by `_class_name`.
    ///
    /// # Errors
    /// [`ModelError::UnknownModel`] when `_class_name` is absent or not one of
    /// [`ModelClass::ALL`].
    pub fn model_class(&self) -> Result<ModelClass> {
        let name = self.class_name.as_deref().unwrap_or("<no _class_name>");
        ModelClass::from_class_name(name).ok_or_else(|| ModelError::UnknownModel {
            class: name.to_owned(),
            path: self.path.clone(),
            supported: ModelClass::ALL.map(ModelClass::class_name).join(", "),
        })
    }

    /// Deserializes the config into a model's serde struct.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_value(self.raw.clone()).map_err(|e| ModelError::Json {
            path: self.path.clone(),
            message: e.to_string(),
        })
    }

    /// Fails unless `_class_name` is `expected` (or absent).
    pub fn expect_class(&self, expected: ModelClass) -> Result<()> {
        match self.class_name.as_deref() {
            None => Ok(()),
            Some(n) if n == expected.class_name() => Ok(()),
            Some(n) => Err(ModelError::Config(format!(
                "{}: _class_name is `{n}`, expected `{}`",
                self.path.display(),
                expected.class_name()
            ))),
        }
    }
}
