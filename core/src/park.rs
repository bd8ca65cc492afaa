//! Where the items of blocked puts wait: one store for the whole manager, so a connection can
//! have several puts blocked at once while the bytes they pin stay within one budget.
//!
//! Firmware lends a byte slice cut into equal slots (an item must fit one slot); a host with
//! `alloc` keeps each item in its own allocation, counted against a byte budget.

#[cfg(feature = "alloc")]
use alloc::vec::Vec;

use crate::storage::Managed;

/// Where one parked item is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ParkRef {
    index: u32,
    len: u32,
}

/// Storage for the items of blocked puts. See the module docs.
pub struct ParkStore<'a> {
    kind: Kind<'a>,
}

// The bitmap lives inline: firmware has no heap to box it into.
#[allow(clippy::large_enum_variant)]
enum Kind<'a> {
    Slots {
        data: Managed<'a, u8>,
        slot_len: usize,
        /// In use, one bit a slot.
        used: heapless::Vec<u32, 64>,
    },
    #[cfg(feature = "alloc")]
    Heap {
        items: Vec<Vec<u8>>,
        free: Vec<u32>,
        bytes: usize,
        budget: usize,
    },
}

/// The most slots a lent store has (64 × 32 bits of bookkeeping).
pub const MAX_PARK_SLOTS: usize = 64 * 32;

impl<'a> ParkStore<'a> {
    /// A store in lent (or given) bytes cut into slots of `slot_len` bytes: at most
    /// `storage.len() / slot_len` items wait at once, each of at most `slot_len` bytes.
    pub fn slots(storage: impl Into<Managed<'a, u8>>, slot_len: usize) -> Self {
        let data = storage.into();
        let slot_len = slot_len.max(1);
        let count = (data.len() / slot_len).min(MAX_PARK_SLOTS);
        let mut used = heapless::Vec::new();
        for _ in 0..count.div_ceil(32) {
            let _ = used.push(0);
        }
        ParkStore {
            kind: Kind::Slots {
                data,
                slot_len,
                used,
            },
        }
    }

    /// No store: a put that cannot complete at once gets `WaiterLimit`.
    pub fn none() -> Self {
        Self::slots(Managed::empty(), 1)
    }

    /// A store on the heap holding at most `budget` bytes of items at once.
    #[cfg(feature = "alloc")]
    pub fn heap(budget: usize) -> Self {
        ParkStore {
            kind: Kind::Heap {
                items: Vec::new(),
                free: Vec::new(),
                bytes: 0,
                budget,
            },
        }
    }

    /// Bytes of items parked now.
    pub fn bytes(&self) -> usize {
        match &self.kind {
            Kind::Slots { used, slot_len, .. } => {
                used.iter().map(|w| w.count_ones() as usize).sum::<usize>() * slot_len
            }
            #[cfg(feature = "alloc")]
            Kind::Heap { bytes, .. } => *bytes,
        }
    }

    /// Keeps a copy of `item`; `None` when the store has no room. `force` lets a heap store
    /// go past its budget (for an item that already left a queue and must not be lost).
    pub(crate) fn store(&mut self, item: &[u8], force: bool) -> Option<ParkRef> {
        let len = u32::try_from(item.len()).ok()?;
        match &mut self.kind {
            Kind::Slots {
                data,
                slot_len,
                used,
            } => {
                let _ = force;
                if item.len() > *slot_len {
                    return None;
                }
                let count = data.len() / *slot_len;
                let (w, bit) = used.iter().enumerate().find_map(|(w, bits)| {
                    Some((w, (!*bits).trailing_zeros())).filter(|_| *bits != u32::MAX)
                })?;
                let index = w * 32 + bit as usize;
                if index >= count {
                    return None;
                }
                used[w] |= 1 << bit;
                let at = index * *slot_len;
                data[at..at + item.len()].copy_from_slice(item);
                Some(ParkRef {
                    index: index as u32,
                    len,
                })
            }
            #[cfg(feature = "alloc")]
            Kind::Heap {
                items,
                free,
                bytes,
                budget,
            } => {
                if !force && *bytes + item.len() > *budget {
                    return None;
                }
                let index = match free.pop() {
                    Some(i) => i,
                    None => {
                        items.push(Vec::new());
                        (items.len() - 1) as u32
                    }
                };
                items[index as usize] = item.to_vec();
                *bytes += item.len();
                Some(ParkRef { index, len })
            }
        }
    }

    /// The bytes of a parked item.
    pub(crate) fn get(&self, at: ParkRef) -> &[u8] {
        match &self.kind {
            Kind::Slots { data, slot_len, .. } => {
                let from = at.index as usize * slot_len;
                data.get(from..from + at.len as usize).unwrap_or(&[])
            }
            #[cfg(feature = "alloc")]
            Kind::Heap { items, .. } => items.get(at.index as usize).map_or(&[], |v| v),
        }
    }

    /// Frees a parked item's room.
    pub(crate) fn free(&mut self, at: ParkRef) {
        match &mut self.kind {
            Kind::Slots { used, .. } => {
                let (w, bit) = (at.index as usize / 32, at.index % 32);
                if let Some(bits) = used.get_mut(w) {
                    *bits &= !(1 << bit);
                }
            }
            #[cfg(feature = "alloc")]
            Kind::Heap {
                items, free, bytes, ..
            } => {
                if let Some(item) = items.get_mut(at.index as usize) {
                    *bytes -= item.len();
                    *item = Vec::new();
                    free.push(at.index);
                }
            }
        }
    }
}
