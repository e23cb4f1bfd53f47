//! Resident copies of weight matrices in transparent huge pages, as stored or repacked.
//!
//! A decode step streams every weight once; with 4 KiB pages the page walks, not DRAM, limit
//! that stream (measured here: 24 GB/s with 4 KiB pages against 34 GB/s with 2 MiB pages for
//! the same kernel). Each matrix is copied from the file mapping into an anonymous region
//! aligned to 2 MiB and advised as huge pages, and the mapped source pages are released at once,
//! so loading never holds more than the model plus one 8 MiB chunk. Depends on `weights` only.

use memmap2::{Mmap, MmapMut};

use super::weights::{MappedElement, WeightView};

const HUGE_PAGE: usize = 2 << 20;
/// Source bytes copied between releases of the mapped pages behind them.
pub const RELEASE_CHUNK: usize = 8 << 20;

pub struct ResidentBytes {
    map: Mmap,
    offset: usize,
    len: usize,
}

impl ResidentBytes {
    pub fn copy_of(view: &WeightView) -> std::io::Result<Self> {
        let src = view.bytes();
        let len = src.len();
        Self::filled::<u8>(len, |dst| {
            // Chunked, so the source pages of a large matrix never sit beside its whole copy.
            for from in (0..len).step_by(RELEASE_CHUNK) {
                let to = (from + RELEASE_CHUNK).min(len);
                dst[from..to].copy_from_slice(&src[from..to]);
                view.release_pages(from, to);
            }
        })
    }

    /// `count` zeroed values of `T` in huge pages, written once by `fill` and read-only after.
    /// `fill` should release its source as it goes, as `copy_of` does.
    pub fn filled<T: MappedElement>(
        count: usize,
        fill: impl FnOnce(&mut [T]),
    ) -> std::io::Result<Self> {
        let len = count * std::mem::size_of::<T>();
        // The extra huge page lets the data start on a 2 MiB boundary; the unused head is never
        // touched, so it costs address space only.
        let mut map = MmapMut::map_anon(len + HUGE_PAGE)?;
        #[cfg(target_os = "linux")]
        {
            // Advice only: without transparent huge pages the copy still works, in small pages.
            let _ = map.advise(memmap2::Advice::HugePage);
        }
        let offset = map.as_ptr().align_offset(HUGE_PAGE).min(HUGE_PAGE);
        let data = &mut map[offset..offset + len];
        // SAFETY: the data starts on a 2 MiB boundary (or the map's own page-aligned start),
        // aligned for any element type; the fresh anonymous mapping is zeroed, a valid bit
        // pattern for every MappedElement; the mutable borrow of `map` bounds the slice.
        let typed = unsafe { std::slice::from_raw_parts_mut(data.as_mut_ptr().cast::<T>(), count) };
        fill(typed);
        Ok(Self {
            map: map.make_read_only()?,
            offset,
            len,
        })
    }

    pub fn bytes(&self) -> &[u8] {
        &self.map[self.offset..self.offset + self.len]
    }
}
