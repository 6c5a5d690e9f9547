//! Read-only memory maps of model and data files, and handing their pages back once the tensors
//! they hold have been replaced.
//!
//! A loaded model's tensors are zero-copy slices of its mapped file, and every page read stays
//! counted in the process's memory. A pass that rewrites every weight would then hold the old
//! bytes next to the new ones: twice the model. [`release`] drops the whole pages of a replaced
//! slice from the process. The pages are read back from the file if anything touches them again,
//! so releasing is never wrong, at worst slower.

use std::fs::File;
use std::ops::Range;
use std::sync::{Mutex, PoisonError};

use bytes::Bytes;
use memmap2::Mmap;

/// Address ranges of the mappings alive now; a mapping leaves it (under the lock) before it is
/// unmapped.
static LIVE: Mutex<Vec<Range<usize>>> = Mutex::new(Vec::new());

/// A file mapping known to [`release`] while it lives.
struct Mapping(Mmap);

impl AsRef<[u8]> for Mapping {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        let start = self.0.as_ptr() as usize;
        live().retain(|r| r.start != start);
    }
}

fn live() -> std::sync::MutexGuard<'static, Vec<Range<usize>>> {
    LIVE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Maps a non-empty `file` read-only.
///
/// The caller must never write the file in place while the bytes live: shears writes outputs to
/// a temporary file and renames it into place, which leaves a mapped file intact.
pub fn map_file(file: &File) -> std::io::Result<Bytes> {
    // SAFETY: read-only mapping; the contract above keeps its contents from changing under us.
    let map = unsafe { Mmap::map(file) }?;
    let start = map.as_ptr() as usize;
    live().push(start..start + map.len());
    Ok(Bytes::from_owner(Mapping(map)))
}

/// Drops the whole memory pages that `bytes` covers from the process, when `bytes` is part of a
/// mapping made by [`map_file`]; otherwise does nothing.
pub fn release(bytes: &Bytes) {
    #[cfg(unix)]
    {
        let start = bytes.as_ptr() as usize;
        let end = start + bytes.len();
        let live = live();
        if !live.iter().any(|r| r.start <= start && end <= r.end) {
            return;
        }
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(0);
        if page == 0 {
            return;
        }
        let first = start.next_multiple_of(page);
        let last = end / page * page;
        if first < last {
            // SAFETY: [first, last) is page-aligned and lies inside a live read-only file
            // mapping, which cannot be unmapped meanwhile: `bytes` keeps it alive and it leaves
            // LIVE, under the lock held here, before it is unmapped. MADV_DONTNEED on such a
            // mapping only drops the process's pages; reads fault the file's bytes back in.
            unsafe {
                libc::madvise(
                    first as *mut libc::c_void,
                    last - first,
                    libc::MADV_DONTNEED,
                );
            }
        }
    }
    #[cfg(not(unix))]
    let _ = bytes;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn released_pages_read_back_unchanged() {
        let content: Vec<u8> = (0..64 * 1024).map(|i| (i % 251) as u8).collect();
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&content).unwrap();
        let bytes = map_file(&file).unwrap();
        assert_eq!(bytes[..], content[..]);
        release(&bytes.slice(1000..60_000));
        release(&bytes);
        assert_eq!(bytes[..], content[..]);
        // Heap bytes are left alone.
        let heap = Bytes::from(content.clone());
        release(&heap);
        assert_eq!(heap[..], content[..]);
    }
}
