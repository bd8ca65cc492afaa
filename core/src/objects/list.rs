//! A list object's values, packed like a dict's entries (each a varint length and its bytes)
//! in the object's storage, in order.

use super::{Shared, State};
use crate::wire::{ErrorCode, Items};

impl Shared<'_> {
    /// A list's packed length and number of values; `None` for another kind.
    fn list(&self) -> Option<(usize, u32)> {
        match self.state {
            State::List { len, entries } => Some((len, entries)),
            _ => None,
        }
    }

    /// The position Python's `index` names in a list of `entries` (negative: from the end).
    fn position(index: i32, entries: u32) -> Option<u32> {
        let at = if index < 0 {
            i64::from(entries) + i64::from(index)
        } else {
            i64::from(index)
        };
        (0..i64::from(entries)).contains(&at).then_some(at as u32)
    }

    /// Where value `n` of a list is: `(start, end, value)`, `end` past its bytes; `n` equal
    /// to the number of values gives the end of the list (and no value).
    fn nth(&self, n: u32) -> Option<(usize, usize, &[u8])> {
        let items = self.entries()?;
        let total = items.0.len();
        let mut iter = items.iter();
        for _ in 0..n {
            iter.next()?;
        }
        let start = total - iter.remaining().len();
        let value = iter.next().unwrap_or(&[]);
        Some((start, total - iter.remaining().len(), value))
    }

    /// A list's value at `index`.
    pub(crate) fn list_at(&self, index: i32) -> Result<&[u8], ErrorCode> {
        let (_, entries) = self.list().ok_or(ErrorCode::WrongKind)?;
        let n = Self::position(index, entries).ok_or(ErrorCode::NoSuchKey)?;
        self.nth(n).map(|(_, _, v)| v).ok_or(ErrorCode::NoSuchKey)
    }

    /// Puts `value` (already checked to be one value) in place of the bytes `start..end`,
    /// `added` values more than before.
    fn splice(
        &mut self,
        start: usize,
        end: usize,
        value: &[u8],
        added: u32,
    ) -> Result<(), ErrorCode> {
        let (len, entries) = self.list().ok_or(ErrorCode::WrongKind)?;
        if entries.saturating_add(added) > self.spec.capacity {
            return Err(ErrorCode::Full);
        }
        let size = Items::packed_len(value.len());
        let new_len = len - (end - start) + size;
        if new_len > (self.spec.max_item as usize).min(self.data.len()) {
            return Err(ErrorCode::Full);
        }
        self.data.copy_within(end..len, start + size);
        Items::push(&mut self.data, start, value).ok_or(ErrorCode::Full)?;
        self.state = State::List {
            len: new_len,
            entries: entries + added,
        };
        Ok(())
    }

    /// Inserts `value` before position `index`, clamped to the list as Python's `insert`
    /// does (`i32::MAX`: at the end).
    pub(crate) fn list_insert(&mut self, index: i32, value: &[u8]) -> Result<(), ErrorCode> {
        let (_, entries) = self.list().ok_or(ErrorCode::WrongKind)?;
        let n = match index {
            i if i < 0 => (i64::from(entries) + i64::from(i)).max(0) as u32,
            i => (i as u32).min(entries),
        };
        let (start, _, _) = self.nth(n).ok_or(ErrorCode::NoSuchKey)?;
        self.splice(start, start, value, 1)
    }

    /// Replaces the value at `index`.
    pub(crate) fn list_replace(&mut self, index: i32, value: &[u8]) -> Result<(), ErrorCode> {
        let (_, entries) = self.list().ok_or(ErrorCode::WrongKind)?;
        let n = Self::position(index, entries).ok_or(ErrorCode::NoSuchKey)?;
        let (start, end, _) = self.nth(n).ok_or(ErrorCode::NoSuchKey)?;
        self.splice(start, end, value, 0)
    }

    /// Removes the value at `index`; like a dict's `remove`, its bytes are left just past the
    /// values (until the next change), and the range returned says where.
    pub(crate) fn list_pop(&mut self, index: i32) -> Result<core::ops::Range<usize>, ErrorCode> {
        let (len, entries) = self.list().ok_or(ErrorCode::WrongKind)?;
        let n = Self::position(index, entries).ok_or(ErrorCode::NoSuchKey)?;
        let (start, end, value) = self.nth(n).ok_or(ErrorCode::NoSuchKey)?;
        let value_len = value.len();
        self.data
            .get_mut(start..len)
            .ok_or(ErrorCode::NoSuchKey)?
            .rotate_left(end - start);
        self.state = State::List {
            len: len - (end - start),
            entries: entries - 1,
        };
        Ok(len - value_len..len)
    }

    /// The first position of `value` in a list.
    pub(crate) fn list_find(&self, value: &[u8]) -> Option<u32> {
        let items = self.entries()?;
        items.iter().position(|v| v == value).map(|n| n as u32)
    }

    /// How many times `value` is in a list.
    pub(crate) fn list_count(&self, value: &[u8]) -> u32 {
        self.entries().map_or(0, |items| {
            items.iter().filter(|v| *v == value).count() as u32
        })
    }

    /// Reverses a list in place: the last value moves to the front, then the new last to
    /// second place, and so on (no room needed beyond the list's own).
    pub(crate) fn list_reverse(&mut self) -> Result<(), ErrorCode> {
        let (len, entries) = self.list().ok_or(ErrorCode::WrongKind)?;
        for k in 0..entries {
            let (start, _, _) = self.nth(k).ok_or(ErrorCode::WrongKind)?;
            let (last, _, _) = self.nth(entries - 1).ok_or(ErrorCode::WrongKind)?;
            self.data
                .get_mut(start..len)
                .ok_or(ErrorCode::WrongKind)?
                .rotate_right(len - last);
        }
        Ok(())
    }
}
