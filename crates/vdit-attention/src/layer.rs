//! One layer's patterns, compiled once and cached with their device uploads.

use std::any::Any;
use std::sync::{Arc, Mutex};
use vdit_patterns::{CompiledLayer, HeadSlot, Pattern, PatternKind, VideoLayout};

use crate::AttentionError;

type DeviceEntry = (String, Arc<dyn Any + Send + Sync>);

/// Per-device values (uploaded tables) keyed by a device string, built on first use.
#[derive(Default)]
pub(crate) struct DeviceCache(Mutex<Vec<DeviceEntry>>);

impl DeviceCache {
    pub(crate) fn get_or_init<T: Any + Send + Sync, E>(
        &self,
        key: &str,
        init: impl FnOnce() -> Result<T, E>,
    ) -> Result<Arc<T>, E> {
        let mut cache = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, v)) = cache.iter().find(|(k, _)| k == key)
            && let Ok(v) = v.clone().downcast::<T>()
        {
            return Ok(v);
        }
        let v = Arc::new(init()?);
        cache.push((key.to_string(), v.clone()));
        Ok(v)
    }
}

/// One layer's per-head patterns compiled for a layout, with heads grouped by shared
/// block table. Build it once per (layout, layer, step range) and reuse it: GPU
/// backends upload the tables on first use and cache the upload here, per device.
pub struct PreparedLayer {
    compiled: Arc<CompiledLayer>,
    dense: bool,
    device_cache: DeviceCache,
}

impl std::fmt::Debug for PreparedLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedLayer")
            .field("heads", &self.compiled.heads())
            .field("tables", &self.compiled.tables().len())
            .field("density", &self.compiled.density())
            .finish()
    }
}

impl PreparedLayer {
    /// Compiles `patterns` (one per head) for `layout` with blocks of `block_size`.
    pub fn new(
        patterns: &[Pattern],
        layout: &VideoLayout,
        block_size: usize,
    ) -> Result<Self, AttentionError> {
        Ok(Self::from_compiled(CompiledLayer::compile(
            patterns, layout, block_size,
        )?))
    }

    /// A layer where all `heads` are dense.
    pub fn dense(
        heads: usize,
        layout: &VideoLayout,
        block_size: usize,
    ) -> Result<Self, AttentionError> {
        Self::new(&vec![Pattern::Dense; heads], layout, block_size)
    }

    /// Wraps an already compiled layer.
    pub fn from_compiled(compiled: CompiledLayer) -> Self {
        let dense = compiled
            .slots()
            .iter()
            .all(|s| matches!(s, HeadSlot::Table(_)))
            && compiled
                .tables()
                .iter()
                .all(|t| t.kind() == PatternKind::Dense);
        PreparedLayer {
            compiled: Arc::new(compiled),
            dense,
            device_cache: DeviceCache::default(),
        }
    }

    /// The compiled tables and head slots.
    pub fn compiled(&self) -> &CompiledLayer {
        &self.compiled
    }

    /// Number of heads.
    pub fn heads(&self) -> usize {
        self.compiled.heads()
    }

    /// Layout the tables were compiled for.
    pub fn layout(&self) -> Option<&VideoLayout> {
        self.compiled.tables().first().map(|t| t.layout())
    }

    /// Whether every head is dense.
    pub fn is_dense(&self) -> bool {
        self.dense
    }

    /// Returns the cached per-device value for `key`, building it with `init` on first
    /// use. GPU backends keep their uploaded block tables here.
    pub fn device_cached<T: Any + Send + Sync, E>(
        &self,
        key: &str,
        init: impl FnOnce() -> Result<T, E>,
    ) -> Result<Arc<T>, E> {
        self.device_cache.get_or_init(key, init)
    }
}

/// The shape of a dense cross-attention (`heads`, query and key lengths), with the
/// device uploads GPU backends build for it on first use (their all-blocks table).
/// Keep one per shape and reuse it, as [`crate::AttentionContext::cross_attention`] does.
pub struct PreparedCross {
    heads: usize,
    tokens: usize,
    kv_tokens: usize,
    device_cache: DeviceCache,
}

impl std::fmt::Debug for PreparedCross {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedCross")
            .field("heads", &self.heads)
            .field("tokens", &self.tokens)
            .field("kv_tokens", &self.kv_tokens)
            .finish()
    }
}

impl PreparedCross {
    /// Cross-attention of `heads` heads, `tokens` queries, `kv_tokens` keys.
    ///
    /// # Errors
    /// A zero size.
    pub fn new(heads: usize, tokens: usize, kv_tokens: usize) -> Result<Self, AttentionError> {
        if heads == 0 || tokens == 0 || kv_tokens == 0 {
            return Err(AttentionError::Shape(format!(
                "cross-attention needs heads, tokens and kv_tokens > 0, got {heads}, {tokens}, {kv_tokens}"
            )));
        }
        Ok(PreparedCross {
            heads,
            tokens,
            kv_tokens,
            device_cache: DeviceCache::default(),
        })
    }

    /// Heads.
    pub fn heads(&self) -> usize {
        self.heads
    }

    /// Query tokens.
    pub fn tokens(&self) -> usize {
        self.tokens
    }

    /// Key/value tokens.
    pub fn kv_tokens(&self) -> usize {
        self.kv_tokens
    }

    /// Returns the cached per-device value for `key`, building it with `init` on first
    /// use (see [`PreparedLayer::device_cached`]).
    pub fn device_cached<T: Any + Send + Sync, E>(
        &self,
        key: &str,
        init: impl FnOnce() -> Result<T, E>,
    ) -> Result<Arc<T>, E> {
        self.device_cache.get_or_init(key, init)
    }
}
