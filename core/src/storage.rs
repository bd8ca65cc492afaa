//! Storage that the caller either lends or gives.
//!
//! Firmware lends `&'static mut` slices (or slices of a stack frame); a host with the `alloc`
//! feature gives `Vec`s, so the state machines own their memory and can be `'static`, moved and
//! shared without self-referencing tricks.

use core::ops::{Deref, DerefMut};

#[cfg(feature = "alloc")]
use alloc::vec::Vec;

/// A slice that is either borrowed or (with the `alloc` feature) owned.
pub enum Managed<'a, T: 'a> {
    /// Lent by the caller for the life of the owner.
    Borrowed(&'a mut [T]),
    /// Given to the owner.
    #[cfg(feature = "alloc")]
    Owned(Vec<T>),
}

impl<T> Deref for Managed<'_, T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        match self {
            Managed::Borrowed(slice) => slice,
            #[cfg(feature = "alloc")]
            Managed::Owned(vec) => vec,
        }
    }
}

impl<T> DerefMut for Managed<'_, T> {
    fn deref_mut(&mut self) -> &mut [T] {
        match self {
            Managed::Borrowed(slice) => slice,
            #[cfg(feature = "alloc")]
            Managed::Owned(vec) => vec,
        }
    }
}

impl<'a, T> From<&'a mut [T]> for Managed<'a, T> {
    fn from(slice: &'a mut [T]) -> Self {
        Managed::Borrowed(slice)
    }
}

impl<'a, T, const N: usize> From<&'a mut [T; N]> for Managed<'a, T> {
    fn from(array: &'a mut [T; N]) -> Self {
        Managed::Borrowed(array)
    }
}

#[cfg(feature = "alloc")]
impl<'a, T> From<&'a mut Vec<T>> for Managed<'a, T> {
    fn from(vec: &'a mut Vec<T>) -> Self {
        Managed::Borrowed(vec)
    }
}

#[cfg(feature = "alloc")]
impl<T> From<Vec<T>> for Managed<'_, T> {
    fn from(vec: Vec<T>) -> Self {
        Managed::Owned(vec)
    }
}

impl<T> Managed<'_, T> {
    /// An empty borrowed slice (no storage at all).
    pub fn empty() -> Self {
        Managed::Borrowed(&mut [])
    }
}

/// A byte buffer: a fixed lent slice, or (with `alloc`) a `Vec` that grows on demand up to a
/// limit and gives its memory back when emptied, down to what it keeps, so an idle manager
/// connection costs no buffer.
pub(crate) struct Bytes<'a> {
    storage: Managed<'a, u8>,
    /// The most bytes the buffer may hold.
    limit: usize,
    /// Bytes an owned buffer keeps when emptied.
    #[cfg(feature = "alloc")]
    keep: usize,
}

/// Bytes an owned buffer starts with when it first needs memory.
#[cfg(feature = "alloc")]
const OWNED_FIRST: usize = 4096;

/// The most an owned buffer keeps when emptied while its connection is busy (`keep_grown`):
/// two of the largest batch frames clients send (60 KiB), so batches of any size stop growing
/// and giving back their buffers, while a connection that once carried a huge item does not
/// keep that much for as long as it stays busy.
#[cfg(feature = "alloc")]
const KEPT_WHILE_BUSY: usize = 128 << 10;

impl<'a> Bytes<'a> {
    pub(crate) fn new(storage: Managed<'a, u8>) -> Self {
        let limit = storage.len();
        Bytes {
            storage,
            limit,
            #[cfg(feature = "alloc")]
            keep: 0,
        }
    }

    /// An owned buffer that holds nothing until used and at most `limit` bytes. Emptied, it
    /// gives its memory back (`keep: false`: a manager's idle connections cost nothing), or
    /// keeps its first block (`keep: true`: a client reading reply after reply would
    /// otherwise allocate and zero that block for every one).
    #[cfg(feature = "alloc")]
    pub(crate) fn owned(limit: usize, keep: bool) -> Self {
        Bytes {
            storage: Managed::Owned(Vec::new()),
            limit,
            keep: if keep { OWNED_FIRST } else { 0 },
        }
    }

    /// Whether an owned buffer keeps the memory it has grown to when emptied from now on, up
    /// to `KEPT_WHILE_BUSY` (`false`: none); takes effect at the next `release`.
    #[cfg(feature = "alloc")]
    pub(crate) fn keep_grown(&mut self, keep: bool) {
        self.keep = if keep { KEPT_WHILE_BUSY } else { 0 };
    }

    /// The most bytes the buffer can ever hold.
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// The bytes it holds memory for now.
    pub(crate) fn len(&self) -> usize {
        self.storage.len()
    }

    /// Makes room for at least `n` bytes (capped at the limit); `false` when a lent buffer is
    /// too small.
    pub(crate) fn reserve(&mut self, n: usize) -> bool {
        let n = n.min(self.limit);
        if self.storage.len() >= n {
            return true;
        }
        match &mut self.storage {
            Managed::Borrowed(_) => false,
            #[cfg(feature = "alloc")]
            Managed::Owned(vec) => {
                // Grow geometrically so a stream of growing frames costs few copies.
                let target = n.max(vec.len() * 2).max(OWNED_FIRST).min(self.limit);
                vec.resize(target, 0);
                true
            }
        }
    }

    /// Gives an owned buffer's memory back, beyond what it keeps (the caller checked it holds
    /// nothing).
    pub(crate) fn release(&mut self) {
        #[cfg(feature = "alloc")]
        if let Managed::Owned(vec) = &mut self.storage {
            if vec.len() > self.keep {
                vec.truncate(self.keep);
                vec.shrink_to_fit();
            }
        }
    }
}

impl Deref for Bytes<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.storage
    }
}

impl DerefMut for Bytes<'_> {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.storage
    }
}

#[cfg(all(test, feature = "alloc"))]
mod tests {
    use super::*;

    /// A manager connection's buffer gives all its memory back when emptied; a client's keeps
    /// its first block, and only that.
    #[test]
    fn an_emptied_buffer_keeps_what_it_is_told_to() {
        for (keep, kept) in [(false, 0), (true, OWNED_FIRST)] {
            let mut b = Bytes::owned(1 << 20, keep);
            assert_eq!(b.len(), 0);
            assert!(b.reserve(10));
            assert_eq!(b.len(), OWNED_FIRST);
            b.release();
            assert_eq!(b.len(), kept);
            assert!(b.reserve(3 * OWNED_FIRST));
            assert_eq!(b.len(), 3 * OWNED_FIRST);
            b.release();
            assert_eq!(b.len(), kept);
        }
    }
}
