//! Items taken in one call, packed in one buffer.

use depot_core::wire::{Items, ItemsIter};

/// Items a [`RawQueue::get_batch`](super::RawQueue::get_batch) took, oldest first, kept
/// packed as the replies carried them: one allocation per reply rather than one per item,
/// which is what a consumer of many small items spends most of its time on otherwise.
///
/// ```
/// # fn main() -> Result<(), depot_std::Error> {
/// use depot_std::{Client, Manager};
///
/// let manager = Manager::builder()
///     .listen("127.0.0.1:0")
///     .authkey(b"secret")
///     .queue("readings", 1000)
///     .start()?;
/// let client = Client::connect(manager.address(), b"secret")?;
/// let readings = client.raw_queue("readings")?;
/// readings.put_many(&[&[0x01], &[0x02], &[0x03]])?;
/// let batch = readings.get_batch(3)?;
/// assert_eq!(batch.len(), 3);
/// for item in &batch {
///     assert_eq!(item.len(), 1);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    /// The items as a packed list (PROTOCOL.md §6).
    packed: Vec<u8>,
    len: usize,
}

impl Batch {
    /// The number of items.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no items.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The items, oldest first.
    pub fn iter(&self) -> BatchIter<'_> {
        BatchIter {
            items: Items(&self.packed).iter(),
            left: self.len,
        }
    }

    /// Each item in a `Vec` of its own.
    pub fn to_vecs(&self) -> Vec<Vec<u8>> {
        self.iter().map(<[u8]>::to_vec).collect()
    }

    /// Appends the well-formed items at the front of a packed list (a malformed tail, which a
    /// manager does not send, is left out).
    pub(crate) fn extend_packed(&mut self, items: Items<'_>) {
        let mut iter = items.iter();
        let count = iter.by_ref().count();
        let whole = items.0.len() - iter.remaining().len();
        self.packed.extend_from_slice(&items.0[..whole]);
        self.len += count;
    }

    /// Appends the items of `other`.
    pub(crate) fn append(&mut self, other: Batch) {
        if self.is_empty() {
            *self = other;
            return;
        }
        self.packed.extend_from_slice(&other.packed);
        self.len += other.len;
    }

    /// Appends one item.
    pub(crate) fn push(&mut self, item: &[u8]) {
        let at = self.packed.len();
        self.packed.resize(at + Items::packed_len(item.len()), 0);
        Items::push(&mut self.packed, at, item);
        self.len += 1;
    }

    /// Packed bytes per item, on average (0 if empty).
    pub(crate) fn packed_per_item(&self) -> usize {
        self.packed.len().checked_div(self.len).unwrap_or(0)
    }
}

impl From<Batch> for Vec<Vec<u8>> {
    fn from(batch: Batch) -> Self {
        batch.to_vecs()
    }
}

impl<'a> IntoIterator for &'a Batch {
    type Item = &'a [u8];
    type IntoIter = BatchIter<'a>;

    fn into_iter(self) -> BatchIter<'a> {
        self.iter()
    }
}

/// The items of a [`Batch`], oldest first.
#[derive(Debug, Clone)]
pub struct BatchIter<'a> {
    items: ItemsIter<'a>,
    left: usize,
}

impl<'a> Iterator for BatchIter<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let item = self.items.next()?;
        self.left = self.left.saturating_sub(1);
        Some(item)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for BatchIter<'_> {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_come_back_in_order_whatever_their_sizes() {
        let items: Vec<Vec<u8>> = [0usize, 1, 127, 128, 300, 16_384]
            .iter()
            .map(|&n| (0..n).map(|i| i as u8).collect())
            .collect();
        let mut batch = Batch::default();
        let mut packed = Batch::default();
        for item in &items {
            batch.push(item);
        }
        packed.extend_packed(Items(&batch.packed));
        assert_eq!(batch.len(), items.len());
        assert_eq!(batch.to_vecs(), items);
        assert_eq!(packed, batch);
        assert_eq!(batch.iter().len(), items.len());
    }

    #[test]
    fn a_malformed_tail_is_left_out() {
        let mut whole = Batch::default();
        whole.push(b"one");
        whole.push(b"two");
        let mut packed = whole.packed.clone();
        // A length of 9 with 2 bytes after it.
        packed.extend_from_slice(&[9, 1, 2]);
        let mut batch = Batch::default();
        batch.extend_packed(Items(&packed));
        assert_eq!(batch, whole);
        let mut more = Batch::default();
        more.push(b"three");
        batch.append(more);
        assert_eq!(batch.to_vecs(), [&b"one"[..], b"two", b"three"]);
    }
}
