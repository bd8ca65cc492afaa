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

impl ParkRef {
    /// Where the item is: its slot in a lent store, its entry in a heap store.
    pub(crate) fn index(self) -> u32 {
        self.index
    }
}

/// Storage for the items of blocked puts. See the module docs.
pub struct ParkStore<'a> {
    kind: Kind<'a>,
}

// One store per manager: the size of the larger variant does not matter.
#[allow(clippy::large_enum_variant)]
enum Kind<'a> {
    Slots {
        data: Managed<'a, u8>,
        slot_len: usize,
        /// Slots in `data`.
        count: u32,
        /// Slots in use. Which ones is not kept here: each belongs to the blocked request
        /// that holds its `ParkRef` (see [`ParkStore::store`]); a bitmap for the most slots
        /// would cost every firmware manager 260 bytes of RAM.
        used: u32,
    },
    #[cfg(feature = "alloc")]
    Heap {
        items: Vec<Vec<u8>>,
        free: Vec<u32>,
        bytes: usize,
        budget: usize,
    },
}

/// The most slots a lent store has. Finding a free slot looks at the blocked requests (the
/// store keeps no map of its slots), so a lent store suits a few slots, as firmware has; hosts
/// use `ParkStore::heap` (with the `alloc` feature).
pub const MAX_PARK_SLOTS: usize = 64 * 32;

impl<'a> ParkStore<'a> {
    /// A store in lent (or given) bytes cut into slots of `slot_len` bytes: at most
    /// `storage.len() / slot_len` items wait at once, each of at most `slot_len` bytes.
    pub fn slots(storage: impl Into<Managed<'a, u8>>, slot_len: usize) -> Self {
        let data = storage.into();
        let slot_len = slot_len.max(1);
        let count = (data.len() / slot_len).min(MAX_PARK_SLOTS) as u32;
        ParkStore {
            kind: Kind::Slots {
                data,
                slot_len,
                count,
                used: 0,
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
            Kind::Slots { used, slot_len, .. } => *used as usize * slot_len,
            #[cfg(feature = "alloc")]
            Kind::Heap { bytes, .. } => *bytes,
        }
    }

    /// Keeps a copy of `item`; `None` when the store has no room. `taken(index)` tells whether a lent store's slot `index` holds an item not yet freed
    /// (the caller keeps every `ParkRef` until it frees it).
    pub(crate) fn store(&mut self, item: &[u8], taken: &dyn Fn(u32) -> bool) -> Option<ParkRef> {
        self.store_parts(item, &[], taken)
    }

    /// [`ParkStore::store`] for an item held in two pieces (as a queue holds one that wraps).
    // Called from several places: one copy, not one inlined into each (firmware flash).
    #[inline(never)]
    pub(crate) fn store_parts(
        &mut self,
        a: &[u8],
        b: &[u8],
        taken: &dyn Fn(u32) -> bool,
    ) -> Option<ParkRef> {
        let item_len = a.len() + b.len();
        let len = u32::try_from(item_len).ok()?;
        match &mut self.kind {
            Kind::Slots {
                data,
                slot_len,
                count,
                used,
            } => {
                if item_len > *slot_len || *used >= *count {
                    return None;
                }
                let index = (0..*count).find(|&i| !taken(i))?;
                let at = index as usize * *slot_len;
                let dest = data.get_mut(at..at + item_len)?;
                dest[..a.len()].copy_from_slice(a);
                dest[a.len()..].copy_from_slice(b);
                *used += 1;
                Some(ParkRef { index, len })
            }
            #[cfg(feature = "alloc")]
            Kind::Heap {
                items,
                free,
                bytes,
                budget,
            } => {
                if *bytes + item_len > *budget {
                    return None;
                }
                let index = match free.pop() {
                    Some(i) => i,
                    None => {
                        items.push(Vec::new());
                        (items.len() - 1) as u32
                    }
                };
                let mut item = Vec::with_capacity(item_len);
                item.extend_from_slice(a);
                item.extend_from_slice(b);
                items[index as usize] = item;
                *bytes += item_len;
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
            Kind::Slots { used, count, .. } => {
                if at.index < *count {
                    *used = used.saturating_sub(1);
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
