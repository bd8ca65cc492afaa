//! Shared objects beside queues: events, locks, semaphores, values, barriers and dicts.
//!
//! This is their state and its rules; blocking, waking and replies are the manager's
//! (`manager/objects.rs`). Requests blocked on an object wait in its `waiters` list; the locks
//! and permits connections hold are records in its `holders` list, in the same waiter pool, so
//! they are bounded like blocked requests and go with their connection.

// Without the `objects` feature only queues exist and the manager calls little of this.
#![cfg_attr(not(feature = "objects"), allow(dead_code))]

mod list;

use crate::storage::Managed;
use crate::waiters::WaitList;
use crate::wire::{ErrorCode, Items, ObjectKind, QueueMode, QueueSpec};

/// The value model's `null`: a value object's initial value.
pub(crate) const NULL: [u8; 1] = [0xF6];

/// What the object's kind keeps besides storage and lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    Event {
        set: bool,
    },
    /// Locks and semaphores: permits free now.
    Permits {
        free: u32,
    },
    Value {
        len: usize,
    },
    Barrier {
        broken: bool,
    },
    Dict {
        len: usize,
        entries: u32,
    },
    /// A registered call: requests handed to the application and not yet answered.
    Call {
        running: u32,
    },
    List {
        len: usize,
        entries: u32,
    },
}

/// One object that is not a queue.
pub(crate) struct Shared<'a> {
    pub(crate) kind: ObjectKind,
    pub(crate) spec: QueueSpec,
    pub(crate) state: State,
    data: Managed<'a, u8>,
    /// Blocked requests, oldest first.
    pub(crate) waiters: WaitList,
    /// Locks and semaphores: one record per connection holding permits.
    pub(crate) holders: WaitList,
}

/// Why an object's limits cannot be met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum ObjectSpecError {
    /// A barrier needs a party, a dict room for an entry, a value room for `null`.
    Zero,
    /// The storage is smaller than `max_item`.
    StorageTooSmall,
    /// Queues are declared with `ObjectSlot::queue`.
    Queue,
}

impl core::fmt::Display for ObjectSpecError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            ObjectSpecError::Zero => {
                "a barrier or call needs a party, a value, dict or call a byte"
            }
            ObjectSpecError::StorageTooSmall => "storage smaller than max_item",
            ObjectSpecError::Queue => "not an object kind (a queue)",
        })
    }
}

impl core::error::Error for ObjectSpecError {}

/// The storage bytes an object of `kind` with `spec` needs.
pub(crate) fn storage_needed(kind: ObjectKind, spec: QueueSpec) -> usize {
    match kind {
        ObjectKind::Value | ObjectKind::Dict | ObjectKind::List => spec.max_item as usize,
        _ => 0,
    }
}

/// Whether an object of `kind` can have the limits of `spec` (given enough storage).
pub(crate) fn check(kind: ObjectKind, spec: QueueSpec) -> Result<(), ObjectSpecError> {
    match kind {
        ObjectKind::Queue => Err(ObjectSpecError::Queue),
        ObjectKind::Barrier if spec.capacity == 0 => Err(ObjectSpecError::Zero),
        ObjectKind::Value if spec.max_item == 0 => Err(ObjectSpecError::Zero),
        ObjectKind::Dict | ObjectKind::Call | ObjectKind::List
            if spec.capacity == 0 || spec.max_item == 0 =>
        {
            Err(ObjectSpecError::Zero)
        }
        _ => Ok(()),
    }
}

impl<'a> Shared<'a> {
    /// An object of `kind` with the limits of `spec` (PROTOCOL.md §15): locks have one
    /// permit, semaphores `capacity`, barriers `capacity` parties; values and dicts keep at
    /// most `max_item` bytes of `storage`, a dict at most `capacity` entries.
    pub(crate) fn new(
        kind: ObjectKind,
        spec: QueueSpec,
        mut data: Managed<'a, u8>,
    ) -> Result<Self, ObjectSpecError> {
        let mut spec = QueueSpec {
            mode: QueueMode::Value,
            ..spec
        };
        check(kind, spec)?;
        if data.len() < storage_needed(kind, spec) {
            return Err(ObjectSpecError::StorageTooSmall);
        }
        let state = match kind {
            ObjectKind::Queue => return Err(ObjectSpecError::Queue),
            ObjectKind::Event => {
                spec.capacity = 0;
                spec.max_item = 0;
                State::Event { set: false }
            }
            // `max_item` is the lease, in milliseconds (0: none).
            ObjectKind::Lock | ObjectKind::RLock | ObjectKind::Condition => {
                spec.capacity = 1;
                State::Permits { free: 1 }
            }
            ObjectKind::Semaphore | ObjectKind::BoundedSemaphore => State::Permits {
                free: spec.capacity,
            },
            ObjectKind::Barrier => {
                spec.max_item = 0;
                State::Barrier { broken: false }
            }
            ObjectKind::Value => {
                let Some(first) = data.get_mut(..NULL.len()) else {
                    return Err(ObjectSpecError::StorageTooSmall);
                };
                first.copy_from_slice(&NULL);
                spec.capacity = 1;
                State::Value { len: NULL.len() }
            }
            ObjectKind::Dict => State::Dict { len: 0, entries: 0 },
            ObjectKind::Call => State::Call { running: 0 },
            ObjectKind::List => State::List { len: 0, entries: 0 },
        };
        Ok(Shared {
            kind,
            spec,
            state,
            data,
            waiters: WaitList::EMPTY,
            holders: WaitList::EMPTY,
        })
    }

    /// Bytes of storage the object has.
    pub(crate) fn storage_len(&self) -> usize {
        self.data.len()
    }

    /// Bytes of values stored.
    pub(crate) fn bytes(&self) -> usize {
        match self.state {
            State::Value { len } | State::Dict { len, .. } | State::List { len, .. } => len,
            _ => 0,
        }
    }

    /// The number `depot stat` shows as the object's length: whether an event is set, a
    /// lock's or semaphore's free permits, a barrier's waiting parties, a dict's entries.
    pub(crate) fn count(&self) -> u32 {
        match self.state {
            State::Event { set } => set.into(),
            State::Permits { free } => free,
            State::Value { .. } => 1,
            State::Barrier { .. } => self.waiters.len(),
            State::Dict { entries, .. } | State::List { entries, .. } => entries,
            State::Call { running } => running,
        }
    }

    /// How long a holder keeps a lock or permits before they are taken back, in
    /// milliseconds: counted again from each acquire (`None`: until released).
    pub(crate) fn lease(&self) -> Option<u32> {
        match self.state {
            State::Permits { .. } if self.spec.max_item > 0 => Some(self.spec.max_item),
            _ => None,
        }
    }

    /// Whether this kind keeps an owner per permit (a lock, not a semaphore).
    pub(crate) fn owned(&self) -> bool {
        matches!(
            self.kind,
            ObjectKind::Lock | ObjectKind::RLock | ObjectKind::Condition
        )
    }

    /// Whether its holder may take it again (and frees it with as many releases).
    pub(crate) fn reentrant(&self) -> bool {
        matches!(self.kind, ObjectKind::RLock | ObjectKind::Condition)
    }

    /// A value object's value.
    pub(crate) fn value(&self) -> Option<&[u8]> {
        match self.state {
            State::Value { len } => self.data.get(..len),
            _ => None,
        }
    }

    /// Replaces a value object's value (already checked to be one value).
    pub(crate) fn set_value(&mut self, value: &[u8]) -> Result<(), ErrorCode> {
        let State::Value { len } = &mut self.state else {
            return Err(ErrorCode::WrongKind);
        };
        if value.len() > self.spec.max_item as usize {
            return Err(ErrorCode::TooLarge);
        }
        let dest = self
            .data
            .get_mut(..value.len())
            .ok_or(ErrorCode::TooLarge)?;
        dest.copy_from_slice(value);
        *len = value.len();
        Ok(())
    }

    /// A dict's packed entries: key, value, key, value, …; a list's values.
    pub(crate) fn entries(&self) -> Option<Items<'_>> {
        match self.state {
            State::Dict { len, .. } | State::List { len, .. } => Some(Items(self.data.get(..len)?)),
            _ => None,
        }
    }

    /// Where `key`'s entry is in a dict's packed entries: `(start, end, value)`.
    fn find(&self, key: &[u8]) -> Option<(usize, usize, &[u8])> {
        let entries = self.entries()?;
        let total = entries.0.len();
        let mut iter = entries.iter();
        loop {
            let start = total - iter.remaining().len();
            let k = iter.next()?;
            let v = iter.next()?;
            if k == key {
                return Some((start, total - iter.remaining().len(), v));
            }
        }
    }

    /// A dict's value for `key`.
    pub(crate) fn lookup(&self, key: &[u8]) -> Option<&[u8]> {
        self.find(key).map(|(_, _, v)| v)
    }

    /// Inserts or replaces a dict entry (key and value already checked to be values); an
    /// entry replaced keeps its place.
    pub(crate) fn insert(&mut self, key: &[u8], value: &[u8]) -> Result<(), ErrorCode> {
        let State::Dict { len, entries } = self.state else {
            return Err(ErrorCode::WrongKind);
        };
        let size = Items::packed_len(key.len()) + Items::packed_len(value.len());
        let (start, end, added) = match self.find(key) {
            Some((start, end, _)) => (start, end, 0),
            None if entries >= self.spec.capacity => return Err(ErrorCode::Full),
            None => (len, len, 1),
        };
        let new_len = len - (end - start) + size;
        if new_len > (self.spec.max_item as usize).min(self.data.len()) {
            return Err(ErrorCode::Full);
        }
        self.data.copy_within(end..len, start + size);
        let at = Items::push(&mut self.data, start, key).ok_or(ErrorCode::Full)?;
        Items::push(&mut self.data, at, value).ok_or(ErrorCode::Full)?;
        self.state = State::Dict {
            len: new_len,
            entries: entries + added,
        };
        Ok(())
    }

    /// Removes a dict entry; its value is left just past the entries (until the next
    /// change), and the range returned says where, for the reply.
    pub(crate) fn remove(&mut self, key: &[u8]) -> Result<core::ops::Range<usize>, ErrorCode> {
        let State::Dict { len, entries } = self.state else {
            return Err(ErrorCode::WrongKind);
        };
        let (start, end, value) = self.find(key).ok_or(ErrorCode::NoSuchKey)?;
        let value_len = value.len();
        // The entry moves behind the ones after it, in place.
        self.data
            .get_mut(start..len)
            .ok_or(ErrorCode::NoSuchKey)?
            .rotate_left(end - start);
        self.state = State::Dict {
            len: len - (end - start),
            entries: entries - 1,
        };
        Ok(len - value_len..len)
    }

    /// Bytes of storage, for a reply that reads back what `remove` left past the entries.
    pub(crate) fn raw(&self, range: core::ops::Range<usize>) -> &[u8] {
        self.data.get(range).unwrap_or(&[])
    }
}
