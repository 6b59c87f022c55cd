//! The daemon's memory allocator (unsafe code, like `memcopy`: the library forbids it): small blocks from dlmalloc, large ones from the C library.
//!
//! The static build links musl, whose allocator (mallocng) maps and unmaps whole groups of
//! blocks as they fill and empty. Every request allocates and frees blocks of the same few
//! sizes (TLS records, headers, the answer), so with mallocng the sender thread made about
//! five `mmap` and six `munmap` calls per request, with their page faults and TLB flushes
//! (see `scripts/bench`'s figures in the commit that added this). dlmalloc keeps freed blocks
//! for reuse instead.
//!
//! dlmalloc never gives back memory from the middle of its heap, though, so blocks of
//! [`LARGE`] bytes and more go to the C library's allocator, which gives them back when freed
//! (musl unmaps them or their groups; glibc maps blocks on their own from 128 KiB, a threshold
//! it raises as it goes, and trims the rest of its heap): batches and request bodies, the memory `--max-buffer-bytes` counts, so
//! that the daemon's memory shrinks back when an outage ends. With 128 KiB as the threshold,
//! batches of 100 B lines (50 KB of lines, a 70 KB body) stayed in dlmalloc's heap, and a 30 s
//! outage with a spool peaked at 46.7 MB against 38.8 MB with the C library's allocator alone
//! (`faults::reading_continues_during_an_outage_with_a_spool`); with 32 KiB it peaks at
//! 39.6 MB. The batches reuse their buffers themselves (`batch::Buffers`). The one block of
//! that size left per request is rustls's receive buffer, grown for the answer to 32 KiB and
//! shrunk to 4 KiB whenever it empties: musl unmapped it and mapped it again for every request,
//! and each unmap of a two-thread process interrupts the other core to flush its TLB (4% of
//! all the machine's samples in a `perf record -a` of 100 B lines over TLS). So [`CACHED`]
//! freed blocks of up to [`CACHED_MAX`] bytes are kept for the next allocation of their size:
//! at most 128 KiB that the C library does not get back.

use std::alloc::{GlobalAlloc, Layout, System};
use std::ptr::null_mut;
use std::sync::atomic::{AtomicPtr, Ordering};

/// Blocks of this many bytes or more come from the C library's allocator.
pub const LARGE: usize = 32 * 1024;

/// How many freed large blocks are kept for reuse.
pub const CACHED: usize = 2;

/// Freed large blocks of at most this many bytes are kept for reuse.
pub const CACHED_MAX: usize = 64 * 1024;

/// The C library's `malloc` alignment on every target we build: blocks of at most this
/// alignment came from `malloc` and may serve one another.
const MALLOC_ALIGN: usize = 8;

/// Freed large blocks, each holding its size in its first word; null where a slot is empty.
static FREED: [AtomicPtr<u8>; CACHED] = [const { AtomicPtr::new(null_mut()) }; CACHED];

/// Whether a large block of `layout` may come from, or go to, [`FREED`].
fn cacheable(layout: Layout) -> bool {
    layout.size() <= CACHED_MAX && layout.align() <= MALLOC_ALIGN
}

/// A freed block of exactly `size` bytes, if one is kept: a larger one would waste its rest
/// for as long as the new owner lives (batches held through an outage: 4.7 MB more at the
/// peak of `faults::reading_continues_during_an_outage_with_a_spool`). Another block taken
/// on the way is put back, or freed if its slot was filled meanwhile.
unsafe fn take_freed(size: usize) -> *mut u8 {
    for slot in &FREED {
        let p = slot.swap(null_mut(), Ordering::Acquire);
        if p.is_null() {
            continue;
        }
        if p.cast::<usize>().read() == size {
            return p;
        }
        if slot
            .compare_exchange(null_mut(), p, Ordering::Release, Ordering::Relaxed)
            .is_err()
        {
            free_large(p, p.cast::<usize>().read());
        }
    }
    null_mut()
}

/// Keeps a freed block of `size` bytes in an empty slot, or gives it to the C library.
unsafe fn keep_freed(p: *mut u8, size: usize) {
    p.cast::<usize>().write(size);
    for slot in &FREED {
        if slot
            .compare_exchange(null_mut(), p, Ordering::Release, Ordering::Relaxed)
            .is_ok()
        {
            return;
        }
    }
    free_large(p, size);
}

/// Gives a large `malloc` block back to the C library.
unsafe fn free_large(p: *mut u8, size: usize) {
    // SAFETY: a kept block came from `System.alloc` with at most `MALLOC_ALIGN`, and
    // `free` takes no size.
    System.dealloc(p, Layout::from_size_align_unchecked(size, 1))
}

/// dlmalloc for blocks under [`LARGE`] bytes, the C library's allocator for the others.
/// Install it with `#[global_allocator]`.
pub struct Allocator;

static SMALL: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;

// A block is freed by the allocator that made it: both choose by the block's size, which
// `GlobalAlloc` passes back unchanged. The methods are kept out of line: inlined at every
// allocation in the program, they would add 60 KB to the binary.
unsafe impl GlobalAlloc for Allocator {
    #[inline(never)]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() >= LARGE {
            if cacheable(layout) {
                let p = take_freed(layout.size());
                if !p.is_null() {
                    return p;
                }
            }
            System.alloc(layout)
        } else {
            SMALL.alloc(layout)
        }
    }

    #[inline(never)]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() >= LARGE {
            System.alloc_zeroed(layout)
        } else {
            SMALL.alloc_zeroed(layout)
        }
    }

    #[inline(never)]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if layout.size() < LARGE {
            SMALL.dealloc(ptr, layout)
        } else if cacheable(layout) {
            keep_freed(ptr, layout.size())
        } else {
            System.dealloc(ptr, layout)
        }
    }

    #[inline(never)]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let (was_large, large) = (layout.size() >= LARGE, new_size >= LARGE);
        if was_large == large {
            return if large {
                System.realloc(ptr, layout, new_size)
            } else {
                SMALL.realloc(ptr, layout, new_size)
            };
        }
        // From one allocator to the other: a new block, the contents, the old block freed.
        // SAFETY: the caller guarantees new_size, with layout's alignment, is a valid layout.
        let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
        let new = self.alloc(new_layout);
        if !new.is_null() {
            std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
            self.dealloc(ptr, layout);
        }
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Held by every test here: they share the kept blocks.
    static SERIAL: Mutex<()> = Mutex::new(());

    /// Allocates through [`Allocator`] and checks the block holds what was written.
    fn check(size: usize, align: usize) {
        let layout = Layout::from_size_align(size, align).unwrap();
        unsafe {
            let p = Allocator.alloc(layout);
            assert!(!p.is_null());
            assert_eq!(p as usize % align, 0, "aligned to {align}");
            std::ptr::write_bytes(p, 0xA5, size);
            assert_eq!(*p.add(size - 1), 0xA5);
            Allocator.dealloc(p, layout);
            let z = Allocator.alloc_zeroed(layout);
            assert!(!z.is_null());
            assert!((0..size).all(|i| *z.add(i) == 0), "zeroed, {size} bytes");
            Allocator.dealloc(z, layout);
        }
    }

    #[test]
    fn small_and_large_blocks_are_usable_and_aligned() {
        let _serial = SERIAL.lock().unwrap();
        for size in [1, 24, 4096, LARGE - 1, LARGE, LARGE + 1, 3 << 20] {
            for align in [1, 8, 64, 4096] {
                check(size, align);
            }
        }
    }

    #[test]
    fn realloc_across_the_threshold_keeps_the_contents() {
        let _serial = SERIAL.lock().unwrap();
        // Up from small to large and back down, as a growing and shrinking Vec does.
        let sizes = [100, LARGE - 8, LARGE, 4 * LARGE, LARGE - 1, 10, 2 * LARGE];
        for align in [16, 4096] {
            realloc_through(&sizes, align);
        }
    }

    /// rustls's receive buffer: grown to 32 KiB for an answer, shrunk to 4 KiB when empty.
    #[test]
    fn a_large_block_freed_by_a_shrink_serves_the_next_growth_without_the_c_library() {
        let _serial = SERIAL.lock().unwrap();
        unsafe {
            let large = Layout::from_size_align(LARGE, 1).unwrap();
            let p = Allocator.alloc(large);
            assert!(!p.is_null());
            std::ptr::write_bytes(p, 7, LARGE);
            let small = Allocator.realloc(p, large, 4096);
            assert_eq!(*small.add(4095), 7, "contents kept");
            let small_layout = Layout::from_size_align(4096, 1).unwrap();
            let again = Allocator.realloc(small, small_layout, LARGE);
            assert_eq!(again, p, "the block freed by the shrink was not reused");
            assert_eq!(*again.add(4095), 7, "contents kept");
            // A kept block serves neither a larger request, nor a smaller one (whose owner
            // would hold its rest), nor one aligned past malloc's.
            Allocator.dealloc(again, large);
            let larger = Layout::from_size_align(LARGE + 8, 1).unwrap();
            let q = Allocator.alloc(larger);
            assert_ne!(q, p, "a smaller kept block served a larger request");
            let aligned = Layout::from_size_align(LARGE, 4096).unwrap();
            let a = Allocator.alloc(aligned);
            assert_eq!(a as usize % 4096, 0, "aligned to 4096");
            let r = Allocator.alloc(large);
            assert_eq!(r, p, "kept through the other requests");
            Allocator.dealloc(q, larger);
            let s = Allocator.alloc(large);
            assert_ne!(s, q, "a larger kept block served a smaller request");
            for (block, layout) in [(s, large), (a, aligned), (r, large)] {
                Allocator.dealloc(block, layout);
            }
            // Beyond the slots, blocks go back to the C library.
            let blocks: Vec<_> = (0..CACHED + 2).map(|_| Allocator.alloc(large)).collect();
            for &b in &blocks {
                Allocator.dealloc(b, large);
            }
            let kept = || {
                FREED
                    .iter()
                    .filter(|s| !s.load(Ordering::Relaxed).is_null())
                    .count()
            };
            assert_eq!(kept(), CACHED);
            // Nor is a block over the size kept, even with every slot empty.
            let emptied: Vec<_> = (0..CACHED).map(|_| Allocator.alloc(large)).collect();
            let q = Allocator.alloc(larger);
            assert_eq!(kept(), 0, "every kept block taken");
            let big = Layout::from_size_align(CACHED_MAX + 1, 1).unwrap();
            Allocator.dealloc(Allocator.alloc(big), big);
            assert_eq!(kept(), 0, "a block over CACHED_MAX was kept");
            Allocator.dealloc(q, larger);
            for b in emptied {
                Allocator.dealloc(b, large);
            }
        }
    }

    fn realloc_through(sizes: &[usize], align: usize) {
        unsafe {
            let mut layout = Layout::from_size_align(sizes[0], align).unwrap();
            let mut p = Allocator.alloc(layout);
            for i in 0..sizes[0] {
                *p.add(i) = i as u8;
            }
            let mut kept = sizes[0];
            for &next in &sizes[1..] {
                p = Allocator.realloc(p, layout, next);
                assert!(!p.is_null());
                assert_eq!(p as usize % align, 0, "aligned to {align}");
                kept = kept.min(next);
                assert!(
                    (0..kept).all(|i| *p.add(i) == i as u8),
                    "contents kept through {} -> {next}",
                    layout.size()
                );
                for i in kept..next {
                    *p.add(i) = i as u8;
                }
                kept = next;
                layout = Layout::from_size_align(next, align).unwrap();
            }
            Allocator.dealloc(p, layout);
        }
    }
}
