//! The CPU path never allocates an L x L buffer: peak heap use during a 20,480-token
//! call is bounded by a small multiple of tokens x head_dim (checked with a counting
//! global allocator).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use vdit_attention::cpu::{Dims, sparse_attention};
use vdit_patterns::{CompiledLayer, Pattern, VideoLayout};

struct Counting;
static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = CURRENT.fetch_add(layout.size(), Ordering::SeqCst) + layout.size();
            PEAK.fetch_max(now, Ordering::SeqCst);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Ordering::SeqCst);
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn peak_memory_is_linear_in_tokens() {
    let layout = VideoLayout::new(20, 32, 32).unwrap(); // 20,480 tokens
    let (n, d) = (layout.total_tokens(), 64);
    // One diagonal head and one multi-diagonal head (which gathers permuted rows).
    let patterns = [
        Pattern::Diagonal { band: 0.05 },
        Pattern::MultiDiagonal {
            spatial_band: 0.0,
            frame_reach: 0,
        },
    ];
    let layer = CompiledLayer::compile(&patterns, &layout, 64).unwrap();
    let len = 2 * n * d;
    let x: Vec<f32> = (0..len)
        .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
        .collect();
    let before = CURRENT.load(Ordering::SeqCst);
    PEAK.store(before, Ordering::SeqCst);
    let dims = Dims {
        batch: 1,
        heads: 2,
        tokens: n,
        head_dim: d,
    };
    let out = sparse_attention(&x, &x, &x, dims, &layer, 0.125, None);
    let peak = PEAK.load(Ordering::SeqCst) - before;
    let per_head = n * d * std::mem::size_of::<f32>(); // 5 MiB
    let l_by_l = n * n * std::mem::size_of::<f32>(); // 1.6 GB
    assert_eq!(out.out.len(), len);
    // Output (2 heads) + per-head output/lse/gathered q,k,v + per-block scratch.
    assert!(
        peak <= 16 * per_head,
        "peak {peak} bytes exceeds 16 x tokens x head_dim x 4 = {} (an L x L f32 buffer is {l_by_l})",
        16 * per_head
    );
}
