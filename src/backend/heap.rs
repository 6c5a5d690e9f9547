//! Keeps the memory that inference frees in the process, so the next run reuses it.
//!
//! A session allocates and frees the same activations on every run. glibc serves large blocks
//! with fresh `mmap`s and raises that size limit only to the largest block freed so far, so a
//! model whose biggest activation is smaller than one of its other large blocks (a pruned model:
//! its Detect output stays full size) gets fresh pages, and a page fault for each, on every run.
//! Measured with tract on yolov5s channel-pruned at 0.5 (minor faults of `shears bench --runs 25`
//! less those of `--runs 5`, over 20): 7,200 faults (28 MiB) per run before, 45 after.

use std::sync::Once;

/// The largest block glibc will then serve from its heap (the most `M_MMAP_THRESHOLD` accepts on
/// 64-bit targets).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 32 << 20;

/// How much free memory at the top of the heap glibc keeps instead of returning it.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD: libc::c_int = 512 << 20;

/// Fixes glibc's thresholds once per process; [`super::open`] calls it before building a session.
/// Elsewhere than glibc it does nothing. It only moves where large blocks come from, never what a
/// program computes.
pub fn keep_freed_memory() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: mallopt only adjusts allocator parameters; a rejected value leaves the
        // defaults in place.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
            libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
        }
    });
}
