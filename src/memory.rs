//! Layer 3 — carving the caller-supplied SMRAM region.
//!
//! Nothing in the library allocates: `MmMpGetRequiredSize` computes a
//! [`Layout`] for (CPUs, tokens, cache-line size) and `MmMpInitialize`
//! places every object at the offsets it gives. All arithmetic is checked;
//! an overflow is `None` (EFI_OUT_OF_RESOURCES at the API).
//!
//! Placement rules:
//! * every area starts on a cache-line boundary of the configured size;
//! * objects some CPU spins on (semaphores, mailboxes, per-CPU state) are
//!   padded to whole lines, one object per line (no false sharing);
//! * tokens are packed (8-byte aligned): they are touched once per call.

use core::marker::PhantomData;

/// The smallest cache-line size a configuration may ask for; every type we
/// place needs at most this alignment.
pub const MIN_LINE: usize = 16;
/// `CacheLineSize = 0` means this.
pub const DEFAULT_LINE: usize = 64;
/// Limit on one region (so that every offset fits an `isize`).
const MAX_REGION: usize = isize::MAX as usize;

/// Whether `addr` is a multiple of `align`; `false` for `align == 0`.
/// Written with `checked_rem` so that no division-by-zero panic path can
/// exist even where the compiler cannot see that `align` was validated.
pub const fn is_aligned(addr: usize, align: usize) -> bool {
    matches!(addr.checked_rem(align), Some(0))
}

/// Round `value` up to a multiple of `align` (a power of two).
pub const fn round_up(value: usize, align: usize) -> Option<usize> {
    match value.checked_add(align - 1) {
        Some(v) => Some(v & !(align - 1)),
        None => None,
    }
}

/// A sequential allocator over offsets (not memory): each area starts on a
/// line boundary.
pub struct Carver {
    line: usize,
    end: usize,
}

impl Carver {
    pub fn new(line: usize) -> Self {
        Carver { line, end: 0 }
    }

    /// Reserve `size` bytes on their own line(s); returns the offset.
    pub fn area(&mut self, size: usize) -> Option<usize> {
        let off = round_up(self.end, self.line)?;
        self.end = off.checked_add(size)?;
        Some(off)
    }

    /// Reserve `count` elements of `size` bytes, each padded to whole lines
    /// when `padded`, else to 8 bytes. Returns the array.
    pub fn array(&mut self, size: usize, count: usize, padded: bool) -> Option<ArrayLayout> {
        let stride = round_up(size.max(1), if padded { self.line } else { 8 })?;
        let bytes = stride.checked_mul(count)?;
        let offset = self.area(bytes)?;
        Some(ArrayLayout {
            offset,
            stride,
            len: count,
        })
    }

    /// Total size of the region, or `None` if it is too large to exist.
    pub fn finish(self) -> Option<usize> {
        let total = round_up(self.end, self.line)?;
        (total <= MAX_REGION).then_some(total)
    }
}

/// Where an array lives inside the region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct ArrayLayout {
    pub offset: usize,
    pub stride: usize,
    pub len: usize,
}

/// A bounds-checked view of an array of `T` placed in the region.
pub struct Strided<'a, T> {
    base: *const u8,
    layout: ArrayLayout,
    _marker: PhantomData<&'a T>,
}

impl<T> Clone for Strided<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Strided<'_, T> {}

impl<'a, T> Strided<'a, T> {
    /// # Safety
    /// `base + layout.offset` must start `layout.len` initialised `T`s,
    /// `layout.stride` bytes apart, each suitably aligned, living for `'a`
    /// and only ever accessed through shared references (every `T` we
    /// place is made of atomics or is immutable after initialisation).
    pub unsafe fn new(base: *const u8, layout: ArrayLayout) -> Self {
        Strided {
            base,
            layout,
            _marker: PhantomData,
        }
    }

    // No caller asks whether an array is empty: the bounds-checked `get`
    // and `iter` serve every use.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.layout.len
    }

    /// Element `index`, or `None` when out of bounds.
    #[inline]
    pub fn get(&self, index: usize) -> Option<&'a T> {
        if index >= self.layout.len {
            return None;
        }
        // SAFETY: index < len, so offset + index * stride lies inside the
        // array the constructor's contract describes (the layout was
        // computed with checked arithmetic, so it cannot overflow), and the
        // element there is an initialised, aligned `T` living for 'a.
        unsafe {
            let p = self
                .base
                .add(self.layout.offset + index * self.layout.stride);
            Some(&*(p as *const T))
        }
    }

    /// Iterate over all elements with their index (one pointer step per
    /// element: the broadcast and rendezvous loops run over every CPU).
    pub fn iter(&self) -> impl Iterator<Item = (usize, &'a T)> + '_ {
        let (base, layout) = (self.base, self.layout);
        (0..layout.len).map(move |i| {
            // SAFETY: i < len, as in `get`: the element lies inside the
            // array the constructor's contract describes.
            let e = unsafe { &*(base.add(layout.offset + i * layout.stride) as *const T) };
            (i, e)
        })
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn areas_start_on_lines() {
        let mut c = Carver::new(64);
        assert_eq!(c.area(10), Some(0));
        assert_eq!(c.area(1), Some(64));
        let a = c.array(40, 3, true).unwrap();
        assert_eq!(
            a,
            ArrayLayout {
                offset: 128,
                stride: 64,
                len: 3
            }
        );
        let t = c.array(44, 2, false).unwrap();
        assert_eq!(
            t,
            ArrayLayout {
                offset: 320,
                stride: 48,
                len: 2
            }
        );
        assert_eq!(c.finish(), Some(448));
    }

    #[test]
    fn overflow_is_none() {
        let mut c = Carver::new(64);
        assert!(c.array(64, usize::MAX / 32, true).is_none());
        let mut c = Carver::new(64);
        c.area(MAX_REGION).unwrap();
        assert!(c.finish().is_none());
        assert_eq!(round_up(usize::MAX, 64), None);
    }
}
