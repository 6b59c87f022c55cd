//! `memcpy` and `memmove` for the static x86_64 build, in place of musl's (unsafe code, like
//! `allocator`: the library forbids it). Other builds compile them for their tests only.
//!
//! musl's x86_64 `memcpy` is `rep movsq` after a byte loop to align the destination, and its
//! `memmove`, whenever the destination overlaps the source from above or is the source itself,
//! copies backwards with `rep movsb` under the direction flag: about a byte a cycle, with no fast-string microcode.
//! Both sit on the daemon's hot path. Every line is copied into its batch and every JSON piece
//! into a body (tens to hundreds of bytes each, where `rep movsq` spends more cycles starting
//! than copying), and rustls discards no bytes from its receive buffer while a TLS record is
//! still incomplete, which is a `memmove` of the buffer onto itself: up to 16 KiB copied
//! backwards a byte at a time, several times for each record of every answer. In a profile of
//! 1,000,000 lines of 100 B over TLS, `memcpy` and `memmove` took 22% of the static build's
//! cycles against 7% for glibc's.
//!
//! These copy up to 128 bytes with overlapping 16-byte loads, all made before the first store
//! (so they also serve `memmove`), larger blocks with a loop of four 16-byte loads and stores
//! (SSE2, which every x86_64 has), from [`REP_MOVSB_FROM`] bytes forwards with `rep movsb`, and
//! return at once when there is nothing to move. The loops are written so that the compiler
//! cannot recognise them as a copy and call `memcpy` from within `memcpy`.

use core::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_storeu_si128};

/// From this many bytes a forward copy is one `rep movsb`, which the processor runs as a
/// string copy of whole cache lines (the "enhanced" `rep movsb` of Intel's processors since Ivy
/// Bridge and AMD's since Zen; older ones copy correctly, only more slowly).
pub const REP_MOVSB_FROM: usize = 2048;

/// The C library's `memcpy`: `n` bytes from `src` to `dst`, which do not overlap.
///
/// # Safety
/// `src` readable and `dst` writable for `n` bytes, the two ranges disjoint.
#[cfg_attr(target_env = "musl", no_mangle)]
pub unsafe extern "C" fn memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    forward(dst, src, n);
    dst
}

/// The C library's `memmove`: `n` bytes from `src` to `dst`, which may overlap.
///
/// # Safety
/// `src` readable and `dst` writable for `n` bytes.
#[cfg_attr(target_env = "musl", no_mangle)]
pub unsafe extern "C" fn memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    let ahead = (dst as usize).wrapping_sub(src as usize);
    if ahead == 0 {
        // Onto itself (rustls's discard of nothing): nothing to do.
    } else if ahead >= n {
        // Below the source, or apart from it: a forward copy never reads a byte it wrote.
        forward(dst, src, n);
    } else {
        backward(dst, src, n);
    }
    dst
}

#[inline(always)]
unsafe fn load(p: *const u8) -> __m128i {
    _mm_loadu_si128(p.cast())
}

#[inline(always)]
unsafe fn store(p: *mut u8, v: __m128i) {
    _mm_storeu_si128(p.cast(), v)
}

/// 64 bytes as four loads.
#[inline(always)]
unsafe fn load64(p: *const u8) -> Block {
    (load(p), load(p.add(16)), load(p.add(32)), load(p.add(48)))
}

/// 64 bytes as four stores.
#[inline(always)]
unsafe fn store64(p: *mut u8, b: Block) {
    store(p, b.0);
    store(p.add(16), b.1);
    store(p.add(32), b.2);
    store(p.add(48), b.3);
}

/// 64 bytes in four registers.
type Block = (__m128i, __m128i, __m128i, __m128i);

/// `n` bytes, from one to two `T`s long: the first and the last `T`, both loaded before either
/// is stored (they overlap when `n` is under two `T`s).
#[inline(always)]
unsafe fn ends<T: Copy>(dst: *mut u8, src: *const u8, n: usize) {
    let w = core::mem::size_of::<T>();
    let a = src.cast::<T>().read_unaligned();
    let b = src.add(n - w).cast::<T>().read_unaligned();
    dst.cast::<T>().write_unaligned(a);
    dst.add(n - w).cast::<T>().write_unaligned(b);
}

/// Up to 128 bytes, in either direction: every load is made before the first store.
#[inline(always)]
unsafe fn small(dst: *mut u8, src: *const u8, n: usize) {
    if n >= 64 {
        let a = load64(src);
        let b = load64(src.add(n - 64));
        store64(dst, a);
        store64(dst.add(n - 64), b);
    } else if n >= 32 {
        let (a, b) = (load(src), load(src.add(16)));
        let (c, d) = (load(src.add(n - 32)), load(src.add(n - 16)));
        store(dst, a);
        store(dst.add(16), b);
        store(dst.add(n - 32), c);
        store(dst.add(n - 16), d);
    } else if n >= 16 {
        ends::<__m128i>(dst, src, n);
    } else if n >= 8 {
        ends::<u64>(dst, src, n);
    } else if n >= 4 {
        ends::<u32>(dst, src, n);
    } else if n >= 2 {
        ends::<u16>(dst, src, n);
    } else if n == 1 {
        *dst = *src;
    }
}

/// A copy that reads each byte before anything is written over it when `dst` lies below
/// `src` or apart from it.
#[inline(always)]
unsafe fn forward(dst: *mut u8, src: *const u8, n: usize) {
    if n <= 128 {
        return small(dst, src, n);
    }
    if n >= REP_MOVSB_FROM {
        // SAFETY: the direction flag is clear, as the ABI requires at every call; `rep movsb`
        // copies forwards, byte by byte as far as an overlap can tell.
        core::arch::asm!(
            "rep movsb",
            inout("rcx") n => _,
            inout("rdi") dst => _,
            inout("rsi") src => _,
            options(nostack, preserves_flags)
        );
        return;
    }
    // The last 64 bytes are loaded first: the loop's stores may overwrite them in the source.
    let tail = load64(src.add(n - 64));
    let mut i = 0;
    while i + 64 < n {
        store64(dst.add(i), load64(src.add(i)));
        i += 64;
    }
    store64(dst.add(n - 64), tail);
}

/// A copy for `dst` above `src` and overlapping it: from the end down, each block loaded
/// before it is stored, the first 64 bytes loaded before anything.
#[inline(always)]
unsafe fn backward(dst: *mut u8, src: *const u8, n: usize) {
    if n <= 128 {
        return small(dst, src, n);
    }
    let head = load64(src);
    let mut i = n;
    while i > 64 {
        i -= 64;
        store64(dst.add(i), load64(src.add(i)));
    }
    store64(dst, head);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A buffer of distinct-looking bytes (no period of a power of two).
    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
            .collect()
    }

    /// Every length to 300, then around each threshold and a few large ones.
    fn lengths() -> Vec<usize> {
        let mut v: Vec<usize> = (0..=300).collect();
        for t in [REP_MOVSB_FROM, 4096, 16384] {
            v.extend(t - 70..t + 70);
        }
        v.extend([100_000, 1 << 20]);
        v
    }

    #[test]
    fn memcpy_copies_every_length_at_five_alignments_and_nothing_else() {
        for n in lengths() {
            let offsets: &[usize] = if n > 4096 { &[0, 7] } else { &[0, 1, 3, 8, 15] };
            for &so in offsets {
                for &d_off in offsets {
                    let src = pattern(n + 32, 1);
                    let mut dst = pattern(n + 32, 2);
                    let before = dst.clone();
                    let r = unsafe { memcpy(dst.as_mut_ptr().add(d_off), src.as_ptr().add(so), n) };
                    assert_eq!(r, unsafe { dst.as_mut_ptr().add(d_off) }, "returns dst");
                    assert_eq!(
                        &dst[d_off..d_off + n],
                        &src[so..so + n],
                        "n {n}, {so}->{d_off}"
                    );
                    assert_eq!(&dst[..d_off], &before[..d_off], "nothing before, n {n}");
                    assert_eq!(
                        &dst[d_off + n..],
                        &before[d_off + n..],
                        "nothing after, n {n}"
                    );
                }
            }
        }
    }

    #[test]
    fn memmove_within_one_buffer_matches_a_copy_through_a_second_buffer() {
        for n in lengths() {
            // Shifts down and up by a byte, by less than a block, by more, and onto itself.
            let shifts: &[isize] = if n > 4096 {
                &[0, 1, -1, 4096, -4096]
            } else {
                &[
                    0, 1, -1, 15, -15, 16, -16, 63, -63, 64, -64, 65, -65, 200, -200,
                ]
            };
            for &shift in shifts {
                let room = 4100 + 4096 + n + 256;
                let mut buf = pattern(room, 3);
                let (from, to) = (4100usize, (4100 + shift) as usize);
                let mut want = buf.clone();
                let moved = buf[from..from + n].to_vec();
                want[to..to + n].copy_from_slice(&moved);
                let base = buf.as_mut_ptr();
                let r = unsafe { memmove(base.add(to), base.add(from), n) };
                assert_eq!(r, unsafe { base.add(to) }, "returns dst");
                assert!(buf == want, "n {n}, shift {shift}");
            }
        }
    }
}
