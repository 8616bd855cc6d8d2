//! Shared-memory layouts and descriptors of Hopper's warpgroup MMA (`wgmma`), in plain Rust.
//!
//! Everything here is host arithmetic: the kernels use the same functions at expansion time
//! (their arguments are comptime), and the unit tests check them on the CPU against values
//! worked out by hand from the PTX ISA's "matrix descriptor" section.
//!
//! # The layout used here: K-major, no swizzle ("interleaved core matrices")
//! A `wgmma` operand in shared memory is made of *core matrices* of 8 rows x 16 bytes (8
//! bf16/f16 values), each stored as 128 contiguous bytes, row after row. One `k16` step of
//! an `m64` A operand is 8 x 2 core matrices (64 rows, 16 columns), of an `nN` B operand
//! `N/8` x 2. We store, per 16-column *slab* of the K dimension:
//!
//! ```text
//! element (r, c) of a [rows, k] tile, c = 16 * slab + 8 * half + inner
//!   -> slab * (rows * 16) + ((r / 8) * 2 + half) * 64 + (r % 8) * 8 + inner
//! ```
//!
//! so the two core matrices of one 8-row group that are adjacent along K are 128 bytes apart
//! (the *leading* byte offset, LBO) and consecutive 8-row groups are 256 bytes apart (the
//! *stride* byte offset, SBO). A whole slab is `rows * 32` bytes; the descriptor of slab `s`
//! is the descriptor of slab 0 with its start address advanced by `s * rows * 32` bytes.

use cubecl::prelude::*;

/// Bytes of one core matrix (8 rows x 16 bytes).
pub const CORE_MATRIX_BYTES: u32 = 128;

/// Element offset of `(row, col)` of a `[rows, k]` 16-bit tile in the K-major interleaved
/// layout described in the module docs. `rows` must be a multiple of 8.
pub const fn kmajor_offset(row: u32, col: u32, rows: u32) -> u32 {
    let slab = col / 16;
    let half = (col % 16) / 8;
    let inner = col % 8;
    slab * (rows * 16) + ((row / 8) * 2 + half) * 64 + (row % 8) * 8 + inner
}

/// Element offset of `(k, n)` of a `[k, cols]` 16-bit tile whose rows are contiguous along N
/// ("MN-major", e.g. V as the B operand of `P V`), `cols` a multiple of 8: per 16-row slab of
/// K, core matrix (n / 8, (k % 16) / 8) holds rows `k % 8` of 8 consecutive N elements.
pub const fn mnmajor_offset(k: u32, n: u32, cols: u32) -> u32 {
    let slab = k / 16;
    let half = (k % 16) / 8;
    slab * (cols * 16) + ((n / 8) * 2 + half) * 64 + (k % 8) * 8 + n % 8
}

/// Byte offset between the two core matrices of one k16 step (along K) of the MN-major layout.
pub const MNMAJOR_K_STEP: u32 = CORE_MATRIX_BYTES;
/// Byte offset between consecutive 8-column (N) groups of the MN-major layout.
pub const MNMAJOR_N_STEP: u32 = 2 * CORE_MATRIX_BYTES;
/// Which of the two MN-major offsets goes in the descriptor's LBO field; the other goes in
/// SBO. Pinned by the GPU test `descriptor_offset_conventions`.
pub const MNMAJOR_LBO: u32 = MNMAJOR_K_STEP;
/// See [`MNMAJOR_LBO`].
pub const MNMAJOR_SBO: u32 = MNMAJOR_N_STEP;

/// Leading byte offset of the K-major interleaved layout: the next core matrix along K.
pub const KMAJOR_LBO: u32 = CORE_MATRIX_BYTES;
/// Stride byte offset of the K-major interleaved layout: the next 8-row group.
pub const KMAJOR_SBO: u32 = 2 * CORE_MATRIX_BYTES;

/// Bytes between the first elements of two consecutive 16-column slabs of a `[rows, k]`
/// 16-bit tile.
pub const fn slab_bytes(rows: u32) -> u32 {
    rows * 32
}

/// The address-independent bits of a `wgmma` shared-memory matrix descriptor without
/// swizzling: LBO in bits 16-29 and SBO in bits 32-45 (both in units of 16 bytes), base
/// offset 0 (bits 49-51) and layout type 0 = no swizzle (bits 62-63).
pub const fn descriptor_bits(lbo_bytes: u32, sbo_bytes: u32) -> u64 {
    (((lbo_bytes as u64) >> 4) & 0x3FFF) << 16 | (((sbo_bytes as u64) >> 4) & 0x3FFF) << 32
}

/// A whole descriptor: [`descriptor_bits`] with the 18-bit shared-memory byte address of the
/// matrix start in bits 0-13 (in units of 16 bytes).
pub const fn descriptor(smem_addr: u32, lbo_bytes: u32, sbo_bytes: u32) -> u64 {
    descriptor_bits(lbo_bytes, sbo_bytes) | (((smem_addr as u64) & 0x3FFFF) >> 4)
}

/// Row and column of accumulator register `reg` of thread `thread` (0..128) of a warpgroup
/// for `wgmma.m64nNk16` with f32 accumulators (`N / 2` registers per thread): warp `w` owns
/// rows `16w..16w+16`; inside it the layout of `mma.sync.m16n8` repeats for every 8 columns.
pub const fn accumulator_coords(thread: u32, reg: u32) -> (u32, u32) {
    let warp = thread / 32;
    let lane = thread % 32;
    let chunk = reg / 4; // which 8-column block
    let within = reg % 4;
    let row = warp * 16 + lane / 4 + (within / 2) * 8;
    let col = chunk * 8 + (lane % 4) * 2 + (within % 2);
    (row, col)
}

/// [`kmajor_offset`] inside a kernel (`row`, `col` at run time).
#[cube]
pub fn kmajor_offset_cube(row: u32, col: u32, #[comptime] rows: u32) -> u32 {
    let slab = col / 16;
    let half = (col % 16) / 8;
    slab * comptime![rows * 16] + ((row / 8) * 2 + half) * 64 + (row % 8) * 8 + col % 8
}

/// [`mnmajor_offset`] inside a kernel.
#[cube]
pub fn mnmajor_offset_cube(k: u32, n: u32, #[comptime] cols: u32) -> u32 {
    let half = (k % 16) / 8;
    (k / 16) * comptime![cols * 16] + ((n / 8) * 2 + half) * 64 + (k % 8) * 8 + n % 8
}

/// The row of [`accumulator_coords`] inside a kernel (`reg` known at expansion).
#[cube]
pub fn accumulator_row_cube(thread: u32, #[comptime] reg: u32) -> u32 {
    let lane = thread % 32;
    (thread / 32) * 16 + lane / 4 + comptime![((reg % 4) / 2) * 8]
}

/// The column of [`accumulator_coords`] inside a kernel (`reg` known at expansion).
#[cube]
pub fn accumulator_col_cube(thread: u32, #[comptime] reg: u32) -> u32 {
    comptime![(reg / 4) * 8 + reg % 2] + (thread % 4) * 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kmajor_offset_places_core_matrices_as_documented() {
        // First core matrix: rows 0..8, columns 0..8, contiguous 64 elements.
        assert_eq!(kmajor_offset(0, 0, 64), 0);
        assert_eq!(kmajor_offset(0, 7, 64), 7);
        assert_eq!(kmajor_offset(1, 0, 64), 8);
        assert_eq!(kmajor_offset(7, 7, 64), 63);
        // Columns 8..16 of the same rows: the next core matrix, LBO = 128 bytes = 64 elements.
        assert_eq!(kmajor_offset(0, 8, 64), 64);
        assert_eq!(kmajor_offset(0, 8, 64) * 2, KMAJOR_LBO);
        // Rows 8..16: two core matrices later, SBO = 256 bytes.
        assert_eq!(kmajor_offset(8, 0, 64) * 2, KMAJOR_SBO);
        // Column 16 starts the next slab of 64 x 16 elements.
        assert_eq!(kmajor_offset(0, 16, 64) * 2, slab_bytes(64));
        assert_eq!(kmajor_offset(0, 16, 128) * 2, slab_bytes(128));
    }

    #[test]
    fn kmajor_offset_is_a_bijection_on_the_tile() {
        for (rows, k) in [(64u32, 64u32), (64, 128), (128, 64), (8, 16)] {
            let mut seen = vec![false; (rows * k) as usize];
            for r in 0..rows {
                for c in 0..k {
                    let o = kmajor_offset(r, c, rows) as usize;
                    assert!(!seen[o], "({r}, {c}) of [{rows}, {k}] collides");
                    seen[o] = true;
                }
            }
        }
    }

    #[test]
    fn mnmajor_offset_keeps_eight_n_values_contiguous_and_is_a_bijection() {
        assert_eq!(mnmajor_offset(0, 7, 128), 7);
        assert_eq!(mnmajor_offset(1, 0, 128), 8);
        assert_eq!(mnmajor_offset(8, 0, 128) * 2, MNMAJOR_K_STEP);
        assert_eq!(mnmajor_offset(0, 8, 128) * 2, MNMAJOR_N_STEP);
        assert_eq!(mnmajor_offset(16, 0, 128) * 2, slab_bytes(128));
        let (k, cols) = (64u32, 128u32);
        let mut seen = vec![false; (k * cols) as usize];
        for kk in 0..k {
            for n in 0..cols {
                let o = mnmajor_offset(kk, n, cols) as usize;
                assert!(!seen[o]);
                seen[o] = true;
            }
        }
    }

    #[test]
    fn descriptor_fields_match_the_ptx_bit_positions() {
        // LBO 128 B -> 8 in bits 16.., SBO 256 B -> 16 in bits 32.., address 0x400 -> 0x40.
        let d = descriptor(0x400, 128, 256);
        assert_eq!(d & 0x3FFF, 0x40);
        assert_eq!((d >> 16) & 0x3FFF, 8);
        assert_eq!((d >> 32) & 0x3FFF, 16);
        assert_eq!(d >> 49, 0, "base offset and swizzle mode stay 0");
        assert_eq!(descriptor_bits(128, 256), 0x0000_0010_0008_0000);
        // The highest shared address (just under 256 KiB) keeps to 14 bits.
        assert_eq!(descriptor(0x3FFF0, 0, 0), 0x3FFF);
    }

    #[test]
    fn accumulator_coords_cover_the_64_by_n_tile_once() {
        for n in [16u32, 64, 128] {
            let mut seen = vec![false; (64 * n) as usize];
            for t in 0..128 {
                for r in 0..n / 2 {
                    let (row, col) = accumulator_coords(t, r);
                    assert!(row < 64 && col < n);
                    let i = (row * n + col) as usize;
                    assert!(!seen[i], "thread {t} reg {r} repeats ({row}, {col})");
                    seen[i] = true;
                }
            }
            assert!(seen.iter().all(|s| *s));
        }
        // mma.sync's m16n8 fragment: lane 5 holds (1, 2), (1, 3), (9, 2), (9, 3).
        assert_eq!(accumulator_coords(5, 0), (1, 2));
        assert_eq!(accumulator_coords(5, 3), (9, 3));
        assert_eq!(accumulator_coords(37, 0), (17, 2));
    }
}
