//! The registry: named objects, declared by the manager at start or created by clients.

use heapless::String;

use crate::objects::{storage_needed, ObjectSpecError, Shared};
use crate::queue::{Queue, SpecError};
use crate::storage::Managed;
use crate::waiters::{WaitKind, WaitList};
use crate::wire::{
    valid_name, ErrorCode, Handle, ObjectInfo, ObjectKind, ObjectStat, QueueSpec, MAX_NAME_LEN,
};

/// Why an object could not be declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum DeclareError {
    /// The name is empty, too long or has control characters.
    InvalidName,
    /// The limits cannot be met by the storage.
    Spec(SpecError),
    /// An object's limits cannot be met.
    Object(ObjectSpecError),
}

impl core::fmt::Display for DeclareError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            DeclareError::InvalidName => write!(
                f,
                "invalid name (1 to {MAX_NAME_LEN} bytes, no control characters)"
            ),
            DeclareError::Spec(SpecError::ZeroCapacity) => {
                f.write_str("capacity must be at least 1")
            }
            DeclareError::Spec(SpecError::StorageTooSmall) => {
                f.write_str("storage cannot hold one item of max_item bytes")
            }
            DeclareError::Object(e) => e.fmt(f),
        }
    }
}

impl core::error::Error for DeclareError {}

/// A queue and the requests blocked on it.
pub(crate) struct QueueObject<'a> {
    pub(crate) queue: Queue<'a>,
    pub(crate) getters: WaitList,
    pub(crate) putters: WaitList,
    pub(crate) joiners: WaitList,
    /// Where items go after this many deliveries under a lease: `(queue, deliveries)`.
    #[cfg_attr(not(feature = "leases"), allow(dead_code))]
    pub(crate) dead_letter: Option<(Handle, u8)>,
}

/// One shared object.
pub(crate) enum Object<'a> {
    Queue(QueueObject<'a>),
    /// Any other kind (see `crate::objects`).
    Shared(Shared<'a>),
}

impl Object<'_> {
    /// The list waiters of `kind` wait in.
    pub(crate) fn list(&mut self, kind: WaitKind) -> &mut WaitList {
        match (self, kind) {
            (Object::Queue(q), WaitKind::Get | WaitKind::Wait | WaitKind::Held) => &mut q.getters,
            (Object::Queue(q), WaitKind::Put) => &mut q.putters,
            (Object::Queue(q), WaitKind::Join) => &mut q.joiners,
            (Object::Shared(o), WaitKind::Held) => &mut o.holders,
            (Object::Shared(o), _) => &mut o.waiters,
        }
    }
}

enum SlotState<'a> {
    /// Storage kept for an object a client may create.
    Spare(Managed<'a, u8>),
    Used(Object<'a>),
    /// Transient, while a spare slot becomes used.
    Taken,
}

/// Room in the registry for one object, with its storage.
pub struct ObjectSlot<'a> {
    name: String<MAX_NAME_LEN>,
    state: SlotState<'a>,
}

impl<'a> ObjectSlot<'a> {
    /// A queue declared at start, like `BaseManager.register`.
    pub fn queue(
        name: &str,
        spec: QueueSpec,
        storage: impl Into<Managed<'a, u8>>,
    ) -> Result<Self, DeclareError> {
        let name = checked_name(name).ok_or(DeclareError::InvalidName)?;
        let queue = Queue::new(spec, storage).map_err(DeclareError::Spec)?;
        Ok(ObjectSlot {
            name,
            state: SlotState::Used(Object::Queue(QueueObject::new(queue))),
        })
    }

    /// An object of another kind than a queue, declared at start (see [`ObjectKind`] for
    /// what `spec` means to each; `storage` holds a value's or dict's bytes).
    pub fn declare(
        name: &str,
        kind: ObjectKind,
        spec: QueueSpec,
        storage: impl Into<Managed<'a, u8>>,
    ) -> Result<Self, DeclareError> {
        let name = checked_name(name).ok_or(DeclareError::InvalidName)?;
        let object = Shared::new(kind, spec, storage.into()).map_err(DeclareError::Object)?;
        Ok(ObjectSlot {
            name,
            state: SlotState::Used(Object::Shared(object)),
        })
    }

    /// Storage for an object a client may create later.
    pub fn spare(storage: impl Into<Managed<'a, u8>>) -> Self {
        ObjectSlot {
            name: String::new(),
            state: SlotState::Spare(storage.into()),
        }
    }

    pub(crate) fn object(&mut self) -> Option<&mut Object<'a>> {
        match &mut self.state {
            SlotState::Used(object) => Some(object),
            _ => None,
        }
    }

    fn info(&self, handle: Handle) -> Option<ObjectInfo> {
        match &self.state {
            SlotState::Used(Object::Queue(q)) => Some(ObjectInfo {
                handle,
                kind: ObjectKind::Queue,
                spec: q.queue.spec(),
            }),
            SlotState::Used(Object::Shared(o)) => Some(ObjectInfo {
                handle,
                kind: o.kind,
                spec: o.spec,
            }),
            _ => None,
        }
    }
}

impl<'a> QueueObject<'a> {
    fn new(queue: Queue<'a>) -> Self {
        QueueObject {
            queue,
            getters: WaitList::EMPTY,
            putters: WaitList::EMPTY,
            joiners: WaitList::EMPTY,
            dead_letter: None,
        }
    }
}

fn checked_name(name: &str) -> Option<String<MAX_NAME_LEN>> {
    if !valid_name(name) {
        return None;
    }
    String::try_from(name).ok()
}

/// All objects, by handle (the slot index).
pub(crate) struct Registry<'a> {
    slots: Managed<'a, ObjectSlot<'a>>,
}

impl<'a> Registry<'a> {
    pub(crate) fn new(slots: Managed<'a, ObjectSlot<'a>>) -> Self {
        Registry { slots }
    }

    pub(crate) fn count(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| matches!(s.state, SlotState::Used(_)))
            .count()
    }

    /// Declared names are unique; a second slot with a taken name is shadowed and reported.
    pub(crate) fn first_duplicate(&self) -> Option<&str> {
        let used = |s: &&ObjectSlot| matches!(s.state, SlotState::Used(_));
        self.slots
            .iter()
            .filter(used)
            .enumerate()
            .find_map(|(i, a)| {
                let later = self.slots.iter().filter(used).skip(i + 1);
                later
                    .clone()
                    .any(|b| b.name == a.name)
                    .then_some(a.name.as_str())
            })
    }

    pub(crate) fn find(&self, name: &str) -> Option<Handle> {
        self.slots
            .iter()
            .position(|s| matches!(s.state, SlotState::Used(_)) && s.name == name)
            .map(|i| Handle(i as u16))
    }

    /// The name of the live object `handle`.
    pub(crate) fn name(&self, handle: Handle) -> Option<&str> {
        let slot = self.slots.get(handle.0 as usize)?;
        matches!(slot.state, SlotState::Used(_)).then_some(slot.name.as_str())
    }

    // Called from several places: one copy, not one inlined into each (firmware flash).
    #[inline(never)]
    pub(crate) fn info(&self, handle: Handle) -> Option<ObjectInfo> {
        self.slots.get(handle.0 as usize)?.info(handle)
    }

    pub(crate) fn get(&mut self, handle: Handle) -> Option<&mut Object<'a>> {
        self.slots.get_mut(handle.0 as usize)?.object()
    }

    pub(crate) fn queue_ref(&self, handle: Handle) -> Option<&QueueObject<'a>> {
        match &self.slots.get(handle.0 as usize)?.state {
            SlotState::Used(Object::Queue(q)) => Some(q),
            _ => None,
        }
    }

    pub(crate) fn queue(&mut self, handle: Handle) -> Result<&mut QueueObject<'a>, ErrorCode> {
        match self.get(handle) {
            Some(Object::Queue(q)) => Ok(q),
            Some(Object::Shared(_)) => Err(ErrorCode::WrongKind),
            None => Err(ErrorCode::NoSuchObject),
        }
    }

    #[cfg_attr(not(feature = "objects"), allow(dead_code))]
    pub(crate) fn shared(&mut self, handle: Handle) -> Result<&mut Shared<'a>, ErrorCode> {
        match self.get(handle) {
            Some(Object::Shared(o)) => Ok(o),
            Some(Object::Queue(_)) => Err(ErrorCode::WrongKind),
            None => Err(ErrorCode::NoSuchObject),
        }
    }

    /// Creates an object in the first spare slot whose storage suffices.
    pub(crate) fn create(
        &mut self,
        name: &str,
        kind: ObjectKind,
        spec: QueueSpec,
    ) -> Result<Handle, ErrorCode> {
        let checked = checked_name(name).ok_or(ErrorCode::InvalidName)?;
        if self.find(name).is_some() {
            return Err(ErrorCode::AlreadyExists);
        }
        let is_queue = kind == ObjectKind::Queue;
        if is_queue && (spec.capacity == 0 || spec.max_item == 0) {
            return Err(ErrorCode::InvalidSpec);
        }
        if !is_queue && crate::objects::check(kind, spec).is_err() {
            return Err(ErrorCode::InvalidSpec);
        }
        let need = if is_queue {
            (spec.max_item as usize).saturating_add(4)
        } else {
            storage_needed(kind, spec)
        };
        let mut any_spare = false;
        for (i, slot) in self.slots.iter_mut().enumerate() {
            let SlotState::Spare(storage) = &slot.state else {
                continue;
            };
            any_spare = true;
            if storage.len() < need {
                continue;
            }
            let SlotState::Spare(storage) = core::mem::replace(&mut slot.state, SlotState::Taken)
            else {
                continue;
            };
            let object = if is_queue {
                Queue::new(spec, storage)
                    .map(|q| Object::Queue(QueueObject::new(q)))
                    .ok()
            } else {
                Shared::new(kind, spec, storage).map(Object::Shared).ok()
            };
            // On failure the storage is gone with the slot: the spec was checked first, so
            // only a spec that fits no object of its kind gets here.
            return match object {
                Some(object) => {
                    slot.name = checked;
                    slot.state = SlotState::Used(object);
                    Ok(Handle(i as u16))
                }
                None => Err(ErrorCode::InvalidSpec),
            };
        }
        Err(if any_spare {
            ErrorCode::InvalidSpec
        } else {
            ErrorCode::ObjectLimit
        })
    }

    /// The `index`-th object in handle order, with its statistics.
    pub(crate) fn stat(&self, index: u16) -> Option<ObjectStat<'_>> {
        let (i, slot) = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| matches!(s.state, SlotState::Used(_)))
            .nth(index as usize)?;
        let handle = Handle(i as u16);
        let q = match &slot.state {
            SlotState::Used(Object::Queue(q)) => q,
            SlotState::Used(Object::Shared(o)) => {
                return Some(ObjectStat {
                    name: slot.name.as_str(),
                    info: slot.info(handle)?,
                    len: o.count(),
                    bytes: o.bytes() as u32,
                    storage: o.storage_len() as u32,
                    getters: o.waiters.len(),
                    putters: o.holders.len(),
                    joiners: 0,
                    unfinished: 0,
                    total_put: 0,
                    total_got: 0,
                })
            }
            _ => return None,
        };
        Some(ObjectStat {
            name: slot.name.as_str(),
            info: slot.info(handle)?,
            len: q.queue.len(),
            bytes: q.queue.bytes() as u32,
            storage: q.queue.storage_len() as u32,
            getters: q.getters.len(),
            putters: q.putters.len(),
            joiners: q.joiners.len(),
            unfinished: q.queue.unfinished(),
            total_put: q.queue.total_put(),
            total_got: q.queue.total_got(),
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }
}
