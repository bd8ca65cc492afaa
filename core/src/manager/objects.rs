//! The manager's side of the objects beside queues (see `crate::objects`): their actions,
//! blocking and waking, and what happens when a waiter or a holder goes away.

use super::Manager;
use crate::waiters::Waiter;
use crate::wire::{Action, ErrorCode, Handle, ObjectKind, QueueSpec, Reply, SMALL_REPLY_BOUND};
#[cfg(feature = "objects")]
use {
    super::{park_timeout, State, NONE},
    crate::codec::{tag, Writer},
    crate::objects::{Shared, State as Obj},
    crate::time::Instant,
    crate::waiters::{Hold, WaitKind},
    crate::wire::{item_reply_bound, Items, Message, Wait},
};

/// A reply that borrows nothing, as one that lives as long as needed (objects give no queue
/// items: those become `WrongKind`).
#[cfg(all(feature = "python", feature = "objects"))]
fn reply_static(reply: Reply<'_>) -> Reply<'static> {
    match reply {
        Reply::Flag(b) => Reply::Flag(b),
        Reply::Count(n) => Reply::Count(n),
        Reply::Error(code) => Reply::Error(code),
        Reply::Done => Reply::Done,
        _ => Reply::Error(ErrorCode::WrongKind),
    }
}

/// The right a key needs on an object to run `action` (PROTOCOL.md §13, §15): `GET` to look
/// or wait (an event's or barrier's `Wait`, `WaitKey`), `PUT` to change it, to take or give
/// back a permit, and to call; `Count` and `Parties` need some right on the object.
pub(super) fn right_for(action: Action) -> crate::keyring::Rights {
    use crate::keyring::Rights;
    match action {
        Action::Count | Action::Parties => Rights::NONE,
        Action::IsSet
        | Action::IsBroken
        | Action::Wait { .. }
        | Action::Get
        | Action::Lookup { .. }
        | Action::Keys
        | Action::Entries
        | Action::WaitKey { .. }
        | Action::At { .. }
        | Action::Find { .. }
        | Action::CountOf { .. } => Rights::GET,
        _ => Rights::PUT,
    }
}

/// The longest error text a `Failed` reply carries, in bytes.
pub const MAX_FAILED_LEN: usize = 120;

#[cfg(feature = "objects")]
/// `text` cut to at most `max` bytes, at a character boundary.
fn cut(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// A registered call handed to the application by [`Manager::poll_call`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallRequest<'m> {
    /// Names the call in [`Manager::handle_call_done`].
    pub id: CallId,
    /// The call object's name: which handler runs it.
    pub name: &'m str,
    /// The request, one value of the value model.
    pub request: &'m [u8],
}

/// One call handed to the application, until it is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallId {
    waiter: u32,
    conn: u32,
    request: u32,
}

#[cfg(feature = "objects")]
/// Whether `bytes` are one value of the value model (keys and values of dicts and values).
fn is_value(bytes: &[u8]) -> bool {
    crate::value::validate(bytes).is_ok()
}

#[cfg(feature = "objects")]
impl Manager<'_> {
    /// `CreateObject`: an object of any kind in a spare slot.
    pub(super) fn create_object(
        &mut self,
        name: &str,
        kind: ObjectKind,
        spec: QueueSpec,
        exist_ok: bool,
    ) -> Reply<'static> {
        if !cfg!(feature = "create") || !self.config.allow_create {
            return Reply::Error(ErrorCode::NotAllowed);
        }
        let handle = match self.registry.find(name) {
            Some(handle) if exist_ok => handle,
            Some(_) => return Reply::Error(ErrorCode::AlreadyExists),
            None => match self.registry.create(name, kind, spec) {
                Ok(handle) => handle,
                Err(e) => return Reply::Error(e),
            },
        };
        match self.registry.info(handle) {
            Some(info) if info.kind == kind => Reply::Opened(info),
            Some(_) => Reply::Error(ErrorCode::WrongKind),
            None => Reply::Error(ErrorCode::NoSuchObject),
        }
    }

    /// Output bytes an action's reply may need on connection `i`.
    pub(super) fn act_reply_bound(&mut self, i: usize, handle: Handle, action: Action) -> usize {
        let carries_values = matches!(
            action,
            Action::Get
                | Action::Lookup { .. }
                | Action::Remove { .. }
                | Action::Keys
                | Action::Entries
                | Action::WaitKey { .. }
                | Action::At { .. }
                | Action::PopAt { .. }
        );
        let fit = self.item_fit(i);
        match self.registry.shared(handle) {
            Ok(o) if carries_values => {
                item_reply_bound(o.storage_len().min(fit)).max(SMALL_REPLY_BOUND)
            }
            _ => SMALL_REPLY_BOUND,
        }
    }

    /// Answers, parks or refuses request `id` of connection `i`: `action` on `handle`.
    pub(super) fn act(&mut self, i: usize, id: u32, handle: Handle, action: Action) {
        let o = match self.registry.shared(handle) {
            Ok(o) => o,
            Err(e) => return self.reply_error(i, id, e),
        };
        let reply = match (o.state, action) {
            (Obj::Event { .. }, Action::Set) => {
                o.state = Obj::Event { set: true };
                while let Some(w) = self
                    .registry
                    .shared(handle)
                    .ok()
                    .and_then(|o| o.waiters.front())
                {
                    self.finish_waiter(w, &Reply::Flag(true));
                }
                Reply::Done
            }
            (Obj::Event { .. }, Action::Clear) => {
                o.state = Obj::Event { set: false };
                Reply::Done
            }
            (Obj::Event { set }, Action::IsSet) => Reply::Flag(set),
            (Obj::Event { set: true }, Action::Wait { .. }) => Reply::Flag(true),
            (Obj::Event { set: false }, Action::Wait { wait }) => {
                return self.park_on(i, id, handle, wait, Waiter::EMPTY);
            }
            (Obj::Permits { .. }, Action::Wait { wait }) if o.kind == ObjectKind::Condition => {
                return self.condition_wait(i, id, handle, wait);
            }
            (Obj::Permits { .. }, Action::Notify { n }) if o.kind == ObjectKind::Condition => {
                self.notify(i, handle, n)
            }
            (Obj::Permits { .. }, Action::Acquire { wait }) => {
                return self.acquire(i, id, handle, wait);
            }
            (Obj::Permits { .. }, Action::Release) => self.release_permit(i, handle),
            // Every kind counts something (`depot stat` shows it as the length).
            (_, Action::Count) => Reply::Count(o.count()),
            (Obj::Barrier { broken: true }, Action::Wait { .. }) => Reply::Error(ErrorCode::Broken),
            (Obj::Barrier { .. }, Action::Parties) => Reply::Count(o.spec.capacity),
            (Obj::Barrier { broken }, Action::IsBroken) => Reply::Flag(broken),
            (Obj::Barrier { .. }, Action::Wait { wait }) => {
                return self.barrier_wait(i, id, handle, wait);
            }
            (Obj::Barrier { .. }, Action::Abort | Action::Reset) => {
                self.break_barrier(handle);
                if action == Action::Reset {
                    if let Ok(o) = self.registry.shared(handle) {
                        o.state = Obj::Barrier { broken: false };
                    }
                }
                Reply::Done
            }
            (Obj::Value { .. }, Action::Get) => {
                return self.reply_shared(i, id, handle, |o| o.value().map(Reply::Value));
            }
            (Obj::Value { .. }, Action::Put { value }) if !is_value(value) => {
                Reply::Error(ErrorCode::InvalidValue)
            }
            (Obj::Value { .. }, Action::Put { value }) => match o.set_value(value) {
                Ok(()) => Reply::Done,
                Err(e) => Reply::Error(e),
            },
            (Obj::Value { .. }, Action::CompareAndSet { value, .. }) if !is_value(value) => {
                Reply::Error(ErrorCode::InvalidValue)
            }
            (Obj::Value { .. }, Action::CompareAndSet { expected, value }) => {
                if o.value() != Some(expected) {
                    Reply::Flag(false)
                } else {
                    match o.set_value(value) {
                        Ok(()) => Reply::Flag(true),
                        Err(e) => Reply::Error(e),
                    }
                }
            }
            (Obj::Dict { .. }, Action::Lookup { key }) => {
                return self.reply_shared(i, id, handle, |o| {
                    Some(
                        o.lookup(key)
                            .map_or(Reply::Error(ErrorCode::NoSuchKey), Reply::Value),
                    )
                });
            }
            (Obj::Dict { .. }, Action::Insert { key, value }) => {
                if !is_value(key) || !is_value(value) {
                    Reply::Error(ErrorCode::InvalidValue)
                } else if let Err(e) = o.insert(key, value) {
                    Reply::Error(e)
                } else {
                    self.reply_done(i, id);
                    return self.wake_key(handle, key);
                }
            }
            (Obj::Dict { .. }, Action::Remove { key }) => match o.remove(key) {
                Ok(at) => {
                    return self.reply_shared(i, id, handle, |o| Some(Reply::Value(o.raw(at))))
                }
                Err(e) => Reply::Error(e),
            },
            (Obj::List { .. }, action) => return self.list_act(i, id, handle, action),
            (Obj::Dict { .. }, Action::Entries) => {
                return self.reply_shared(i, id, handle, |o| o.entries().map(Reply::Values));
            }
            (Obj::Dict { .. }, Action::Keys) => return self.reply_keys(i, id, handle),
            (Obj::Dict { .. }, Action::WaitKey { key, .. }) if o.lookup(key).is_some() => {
                return self.reply_shared(i, id, handle, |o| o.lookup(key).map(Reply::Value));
            }
            (Obj::Dict { .. }, Action::WaitKey { key, wait }) => {
                return self.wait_key(i, id, handle, key, wait);
            }
            (Obj::Call { .. }, Action::Call { request, wait }) => {
                return self.call(i, id, handle, request, wait);
            }
            _ => Reply::Error(ErrorCode::WrongKind),
        };
        self.reply(i, id, &reply);
    }

    /// `action` on the list `handle` by connection `i`.
    fn list_act(&mut self, i: usize, id: u32, handle: Handle, action: Action) {
        let Ok(o) = self.registry.shared(handle) else {
            return;
        };
        let done = |r: Result<(), ErrorCode>| r.map_or_else(Reply::Error, |()| Reply::Done);
        let reply = match action {
            Action::Append { value }
            | Action::Replace { value, .. }
            | Action::InsertAt { value, .. }
                if !is_value(value) =>
            {
                Reply::Error(ErrorCode::InvalidValue)
            }
            Action::Append { value } => done(o.list_insert(i32::MAX, value)),
            Action::InsertAt { index, value } => done(o.list_insert(index, value)),
            Action::Replace { index, value } => done(o.list_replace(index, value)),
            Action::At { index } => {
                return self.reply_shared(i, id, handle, |o| {
                    Some(o.list_at(index).map_or_else(Reply::Error, Reply::Value))
                });
            }
            Action::PopAt { index } => match o.list_pop(index) {
                Ok(at) => {
                    return self.reply_shared(i, id, handle, |o| Some(Reply::Value(o.raw(at))))
                }
                Err(e) => Reply::Error(e),
            },
            Action::Find { value } => o
                .list_find(value)
                .map_or(Reply::Error(ErrorCode::NoSuchKey), Reply::Count),
            Action::CountOf { value } => Reply::Count(o.list_count(value)),
            Action::RemoveValue { value } => match o.list_find(value) {
                Some(n) => done(o.list_pop(n as i32).map(drop)),
                None => Reply::Error(ErrorCode::NoSuchKey),
            },
            Action::Reverse => done(o.list_reverse()),
            Action::Count => Reply::Count(o.count()),
            Action::Entries => {
                return self.reply_shared(i, id, handle, |o| o.entries().map(Reply::Values));
            }
            _ => Reply::Error(ErrorCode::WrongKind),
        };
        self.reply(i, id, &reply);
    }

    /// Parks request `id` of connection `i` on `handle` with the fields of `waiter`; a wait
    /// that may not block is answered `Timeout` at once.
    fn park_on(&mut self, i: usize, id: u32, handle: Handle, wait: Wait, waiter: Waiter) {
        if self.shutting_down {
            return self.reply_error(i, id, ErrorCode::ShuttingDown);
        }
        match park_timeout(wait, ErrorCode::Timeout) {
            Ok(timeout) => {
                self.park(i, id, handle, WaitKind::Wait, timeout, waiter);
            }
            Err(code) => self.reply_error(i, id, code),
        }
    }

    /// Takes a permit for connection `i` now if one is free and nobody waits before it.
    fn acquire(&mut self, i: usize, id: u32, handle: Handle, wait: Wait) {
        let Ok(o) = self.registry.shared(handle) else {
            return;
        };
        let held = self.waiters.find_in(&o.holders, |w| w.conn == i as u32);
        if let (true, Some(h)) = (o.reentrant(), held) {
            // Its holder takes a reentrant lock again.
            if let Hold::Permits(n) = &mut self.waiters.get_mut(h).hold {
                *n = n.saturating_add(1);
            }
            return self.reply(i, id, &Reply::Flag(true));
        }
        let free = matches!(o.state, Obj::Permits { free } if free > 0);
        // A condition's waiters not yet woken do not wait for the lock.
        let list = o.waiters;
        let queued = self.waiters.find_in(&list, |w| {
            !matches!(w.hold, Hold::Condition { woken: None, .. })
        });
        if free && queued.is_none() {
            let reply = if self.take_permit(i, handle) {
                Reply::Flag(true)
            } else {
                Reply::Error(ErrorCode::WaiterLimit)
            };
            return self.reply(i, id, &reply);
        }
        self.park_on(i, id, handle, wait, Waiter::EMPTY);
    }

    /// Gives connection `i` one permit of `handle`, recorded among its holders; `false` when
    /// the waiter pool has no room for the record.
    pub(super) fn take_permit(&mut self, i: usize, handle: Handle) -> bool {
        let Ok(o) = self.registry.shared(handle) else {
            return false;
        };
        let Obj::Permits { free } = o.state else {
            return false;
        };
        let lease = o.lease().map(|ms| self.now.add_millis(ms.into()));
        match self.waiters.find_in(&o.holders, |w| w.conn == i as u32) {
            Some(h) => {
                let record = self.waiters.get_mut(h);
                if let Hold::Permits(n) = &mut record.hold {
                    *n = n.saturating_add(1);
                }
                self.waiters.set_deadline(h, lease);
            }
            None => {
                let record = Waiter {
                    conn: i as u32,
                    request: NONE,
                    object: handle.0,
                    kind: WaitKind::Held,
                    hold: Hold::Permits(1),
                    ..Waiter::EMPTY
                };
                let Some(h) = self.waiters.park(&mut o.holders, record) else {
                    return false;
                };
                self.waiters.set_deadline(h, lease);
                self.conns[i].waiters += 1;
            }
        }
        o.state = Obj::Permits { free: free - 1 };
        true
    }

    /// `Release` by connection `i`. A lock must be held by it; a semaphore's permit released
    /// by a connection that holds none is one its oldest holder took.
    fn release_permit(&mut self, i: usize, handle: Handle) -> Reply<'static> {
        let Ok(o) = self.registry.shared(handle) else {
            return Reply::Error(ErrorCode::NoSuchObject);
        };
        let Obj::Permits { free } = o.state else {
            return Reply::Error(ErrorCode::WrongKind);
        };
        let holder = match self.waiters.find_in(&o.holders, |w| w.conn == i as u32) {
            Some(h) => Some(h),
            None if o.owned() => return Reply::Error(ErrorCode::NotOwner),
            None => o.holders.front(),
        };
        let Some(h) = holder else {
            if o.kind == ObjectKind::BoundedSemaphore && free >= o.spec.capacity {
                return Reply::Error(ErrorCode::Overflow);
            }
            o.state = Obj::Permits {
                free: free.saturating_add(1),
            };
            self.grant(handle);
            return Reply::Done;
        };
        let left = match &mut self.waiters.get_mut(h).hold {
            Hold::Permits(n) => {
                *n = n.saturating_sub(1);
                *n
            }
            _ => 0,
        };
        // A reentrant lock frees its permit with its last release.
        if !o.reentrant() || left == 0 {
            o.state = Obj::Permits {
                free: free.saturating_add(1),
            };
        }
        if left == 0 {
            self.release(h);
        }
        self.grant(handle);
        Reply::Done
    }

    /// Hands free permits of `handle` to its blocked acquirers, oldest first.
    pub(super) fn grant(&mut self, handle: Handle) {
        loop {
            let Ok(o) = self.registry.shared(handle) else {
                return;
            };
            let Obj::Permits { free: 1.. } = o.state else {
                return;
            };
            // A condition's waiter takes part once woken.
            let list = o.waiters;
            let Some(w) = self.waiters.find_in(&list, |w| {
                !matches!(w.hold, Hold::Condition { woken: None, .. })
            }) else {
                return;
            };
            let waiter = *self.waiters.get(w);
            // Unparking frees the slot the holder record may need.
            self.release(w);
            let conn = waiter.conn as usize;
            let reply = if self.take_permit(conn, handle) {
                match waiter.hold {
                    Hold::Condition { levels, woken } => {
                        self.set_levels(conn, handle, levels);
                        Reply::Flag(woken.unwrap_or(true))
                    }
                    _ => Reply::Flag(true),
                }
            } else {
                Reply::Error(ErrorCode::WaiterLimit)
            };
            self.reply(conn, waiter.request, &reply);
        }
    }

    /// Connection `i` is going: the permits it holds come back.
    pub(super) fn drop_holdings(&mut self, i: usize) {
        while let Some(h) = self
            .waiters
            .find_from(0, |w| w.conn == i as u32 && w.kind == WaitKind::Held)
        {
            let record = *self.waiters.get(h);
            self.release(h);
            self.give_back(record);
        }
    }

    /// The permits of a holder `record` (already unlinked) come back to its object, and go
    /// to those waiting.
    fn give_back(&mut self, record: Waiter) {
        let handle = Handle(record.object);
        let Ok(o) = self.registry.shared(handle) else {
            return;
        };
        let (Obj::Permits { free }, Hold::Permits(n)) = (o.state, record.hold) else {
            return;
        };
        let back = if o.owned() { 1 } else { n };
        let mut free = free.saturating_add(back);
        if o.kind == ObjectKind::BoundedSemaphore {
            free = free.min(o.spec.capacity);
        }
        o.state = Obj::Permits { free };
        self.grant(handle);
    }

    /// A blocked request left `waiter`'s object without completing (timed out, cancelled,
    /// its connection went): a barrier breaks; permits may go to those behind it.
    pub(super) fn waiter_left(&mut self, waiter: Waiter) {
        let handle = Handle(waiter.object);
        let Ok(o) = self.registry.shared(handle) else {
            return;
        };
        match (o.state, waiter.kind) {
            (Obj::Call { running }, WaitKind::Wait) => {
                // A call the application is running no longer counts: its answer will find
                // nobody waiting.
                if let Hold::Started(_) = waiter.hold {
                    o.state = Obj::Call {
                        running: running.saturating_sub(1),
                    };
                }
            }
            (Obj::Barrier { .. }, WaitKind::Wait) => self.break_barrier(handle),
            (Obj::Permits { .. }, WaitKind::Wait) => self.grant(handle),
            // A lease ran out.
            (Obj::Permits { .. }, WaitKind::Held) => self.give_back(waiter),
            _ => {}
        }
    }

    /// Arrival `id` of connection `i` at a barrier: the last party releases everyone.
    fn barrier_wait(&mut self, i: usize, id: u32, handle: Handle, wait: Wait) {
        let Ok(o) = self.registry.shared(handle) else {
            return;
        };
        if o.waiters.len() + 1 < o.spec.capacity {
            if let Err(code) = park_timeout(wait, ErrorCode::Timeout) {
                // An arrival that will not wait breaks the barrier, as a timeout does.
                self.break_barrier(handle);
                return self.reply_error(i, id, code);
            }
            return self.park_on(i, id, handle, wait, Waiter::EMPTY);
        }
        // Arrival order is each party's index, as Python's `Barrier.wait` returns it.
        let mut index = 0;
        while let Some(w) = self
            .registry
            .shared(handle)
            .ok()
            .and_then(|o| o.waiters.front())
        {
            self.finish_waiter(w, &Reply::Count(index));
            index += 1;
        }
        self.reply(i, id, &Reply::Count(index));
    }

    /// Breaks a barrier: its waiters, and later arrivals until a reset, get `Broken`.
    fn break_barrier(&mut self, handle: Handle) {
        let Ok(o) = self.registry.shared(handle) else {
            return;
        };
        o.state = Obj::Barrier { broken: true };
        while let Some(w) = self
            .registry
            .shared(handle)
            .ok()
            .and_then(|o| o.waiters.front())
        {
            self.finish_waiter(w, &Reply::Error(ErrorCode::Broken));
        }
    }

    /// Parks a registered call's request until the application takes it
    /// ([`Manager::poll_call`]) and answers it ([`Manager::handle_call_done`]).
    fn call(&mut self, i: usize, id: u32, handle: Handle, request: &[u8], wait: Wait) {
        let Ok(o) = self.registry.shared(handle) else {
            return;
        };
        let max = o.spec.max_item as usize;
        if request.len() > max {
            return self.reply_error(i, id, ErrorCode::TooLarge);
        }
        if !is_value(request) {
            return self.reply_error(i, id, ErrorCode::InvalidValue);
        }
        if let Err(code) = park_timeout(wait, ErrorCode::Timeout) {
            return self.reply_error(i, id, code);
        }
        let Some(parked) = self
            .parked
            .store(request, &|x| self.waiters.holds_parked(x))
        else {
            return self.reply_error(i, id, ErrorCode::WaiterLimit);
        };
        let reserve = item_reply_bound(max.min(self.item_fit(i))).max(SMALL_REPLY_BOUND);
        let waiter = Waiter {
            reserve: reserve as u32,
            hold: Hold::Item(parked),
            ..Waiter::EMPTY
        };
        let before = self.conns[i].waiters;
        self.park_on(i, id, handle, wait, waiter);
        if self.conns[i].waiters == before {
            self.parked.free(parked);
        }
    }

    /// The next registered call for the application to run, if any may start (each call
    /// object runs at most its `capacity` at once, oldest request first). Answer it with
    /// [`Manager::handle_call_done`], however long it takes: the manager serves on meanwhile.
    pub fn poll_call(&mut self) -> Option<CallRequest<'_>> {
        for h in 0..self.registry.len() {
            let handle = Handle(h as u16);
            let Ok(o) = self.registry.shared(handle) else {
                continue;
            };
            let Obj::Call { running } = o.state else {
                continue;
            };
            if running >= o.spec.capacity {
                continue;
            }
            let list = o.waiters;
            let Some(w) = self
                .waiters
                .find_in(&list, |w| matches!(w.hold, Hold::Item(_)))
            else {
                continue;
            };
            o.state = Obj::Call {
                running: running + 1,
            };
            let waiter = self.waiters.get_mut(w);
            let Hold::Item(parked) = waiter.hold else {
                continue;
            };
            waiter.hold = Hold::Started(parked);
            let id = CallId {
                waiter: w,
                conn: waiter.conn,
                request: waiter.request,
            };
            return Some(CallRequest {
                id,
                name: self.registry.name(handle).unwrap_or(""),
                request: self.parked.get(parked),
            });
        }
        None
    }

    /// The application's answer to the call `id`: its response (one value of the value
    /// model, as large as the call's `max_item` at most) or its error, which the client gets
    /// as `Failed` (cut to [`MAX_FAILED_LEN`] bytes). An answer for a call whose client gave
    /// up or went away is dropped.
    pub fn handle_call_done(&mut self, id: CallId, now: Instant, outcome: Result<&[u8], &str>) {
        self.now = now;
        let waiter = *self.waiters.get(id.waiter);
        let ours = waiter.in_use
            && waiter.conn == id.conn
            && waiter.request == id.request
            && matches!(waiter.hold, Hold::Started(_));
        if !ours {
            return;
        }
        let handle = Handle(waiter.object);
        let max = match self.registry.shared(handle) {
            Ok(o) => {
                if let Obj::Call { running } = o.state {
                    o.state = Obj::Call {
                        running: running.saturating_sub(1),
                    };
                }
                o.spec.max_item as usize
            }
            Err(_) => 0,
        };
        let fit = self.item_fit(waiter.conn as usize).min(max);
        let reply = match outcome {
            Ok(v) if v.len() > fit => Reply::Error(ErrorCode::TooLarge),
            Ok(v) if !is_value(v) => Reply::Error(ErrorCode::InvalidValue),
            Ok(v) => Reply::Value(v),
            Err(text) => Reply::Failed(cut(text, MAX_FAILED_LEN)),
        };
        self.finish_waiter(id.waiter, &reply);
        self.run_resumes(now);
    }

    /// Parks a dict's `WaitKey`, its key kept in the park store.
    fn wait_key(&mut self, i: usize, id: u32, handle: Handle, key: &[u8], wait: Wait) {
        if let Err(code) = park_timeout(wait, ErrorCode::NoSuchKey) {
            return self.reply_error(i, id, code);
        }
        let Some(parked) = self.parked.store(key, &|x| self.waiters.holds_parked(x)) else {
            return self.reply_error(i, id, ErrorCode::WaiterLimit);
        };
        let reserve = self.act_reply_bound(i, handle, Action::Get) as u32;
        let waiter = Waiter {
            reserve,
            hold: Hold::Item(parked),
            ..Waiter::EMPTY
        };
        let before = self.conns[i].waiters;
        self.park_on(i, id, handle, wait, waiter);
        if self.conns[i].waiters == before {
            self.parked.free(parked);
        }
    }

    /// Answers every `WaitKey` for `key` on `handle`, which has it now.
    fn wake_key(&mut self, handle: Handle, key: &[u8]) {
        loop {
            let Ok(o) = self.registry.shared(handle) else {
                return;
            };
            let list = o.waiters;
            let parked = &self.parked;
            let found = self.waiters.find_in(&list, |w| {
                w.hold.parked().is_some_and(|p| parked.get(p) == key)
            });
            let Some(w) = found else { return };
            let waiter = *self.waiters.get(w);
            self.release(w);
            self.reply_shared(waiter.conn as usize, waiter.request, handle, |o| {
                o.lookup(key).map(Reply::Value)
            });
        }
    }

    /// Answers request `id` of connection `i` with a reply that borrows `handle`'s storage
    /// (`None` from `make`: no reply). Values that a frame to the peer cannot carry get
    /// `TooLarge`.
    fn reply_shared(
        &mut self,
        i: usize,
        id: u32,
        handle: Handle,
        make: impl for<'s> FnOnce(&'s Shared) -> Option<Reply<'s>>,
    ) {
        #[cfg(feature = "python")]
        if matches!(self.conns[i].state, State::Python { .. }) {
            return self.python_reply_shared(i, handle, make);
        }
        let fit = self.item_fit(i);
        let Ok(o) = self.registry.shared(handle) else {
            return;
        };
        let Some(reply) = make(o) else {
            return;
        };
        let reply = match reply {
            Reply::Value(v) | Reply::Values(Items(v)) if v.len() > fit => {
                Reply::Error(ErrorCode::TooLarge)
            }
            reply => reply,
        };
        let c = &mut self.conns[i];
        let State::Open(session) = &mut c.state else {
            return;
        };
        let was_idle = c.tx.is_empty();
        let msg = Message::Reply { id, reply };
        if c.tx.push(&msg, c.peer_max, &mut session.tx_mac).is_err() {
            return self.begin_close(i, crate::wire::CloseReason::WriteStalled);
        }
        self.output_queued(i, was_idle);
    }

    /// [`Manager::reply_shared`] for a Python connection: a value (or a list of them) is
    /// copied to the join buffer first, since the reply is written with the manager borrowed.
    #[cfg(feature = "python")]
    fn python_reply_shared(
        &mut self,
        i: usize,
        handle: Handle,
        make: impl for<'s> FnOnce(&'s Shared) -> Option<Reply<'s>>,
    ) {
        let Some(side) = self.python.as_mut() else {
            return;
        };
        let Ok(o) = self.registry.shared(handle) else {
            return;
        };
        let (bytes, list) = match make(o) {
            None => return,
            Some(Reply::Value(v)) => (v, false),
            Some(Reply::Values(Items(v))) => (v, true),
            Some(reply) => {
                let reply = reply_static(reply);
                self.python_reply(i, &reply);
                return;
            }
        };
        let Some(dest) = side.join.get_mut(..bytes.len()) else {
            self.python_reply(i, &Reply::Error(ErrorCode::TooLarge));
            return;
        };
        dest.copy_from_slice(bytes);
        let len = bytes.len();
        let join = core::mem::replace(&mut side.join, crate::storage::Managed::empty());
        let reply = match list {
            false => Reply::Value(&join[..len]),
            true => Reply::Values(Items(&join[..len])),
        };
        self.python_reply(i, &reply);
        if let Some(side) = self.python.as_mut() {
            side.join = join;
        }
    }

    /// Answers a dict's `Keys` with its keys, packed, written straight from its entries.
    fn reply_keys(&mut self, i: usize, id: u32, handle: Handle) {
        let fit = self.item_fit(i);
        let Ok(o) = self.registry.shared(handle) else {
            return;
        };
        let Some(entries) = o.entries() else {
            return;
        };
        let keys = || entries.iter().step_by(2);
        let body: usize = keys().map(|k| Items::packed_len(k.len())).sum();
        if body > fit {
            return self.reply_error(i, id, ErrorCode::TooLarge);
        }
        let c = &mut self.conns[i];
        let State::Open(session) = &mut c.state else {
            return;
        };
        let was_idle = c.tx.is_empty();
        let pushed = c.tx.push_with(c.peer_max, &mut session.tx_mac, &mut |out| {
            let mut w = Writer::new(out);
            for v in [
                tag::MESSAGE_REPLY.into(),
                u64::from(id),
                tag::VALUES.into(),
                body as u64,
            ] {
                w.varint(v);
            }
            let mut at = w.finish()?;
            for k in keys() {
                at = Items::push(out, at, k)?;
            }
            Some(at)
        });
        if pushed.is_err() {
            return self.begin_close(i, crate::wire::CloseReason::WriteStalled);
        }
        self.output_queued(i, was_idle);
    }
}

/// Without the `objects` feature the manager serves queues only: `CreateObject` of another
/// kind and every `Act` are answered `NotAllowed` (PROTOCOL.md §17).
#[cfg(not(feature = "objects"))]
impl Manager<'_> {
    pub(super) fn create_object(
        &mut self,
        name: &str,
        kind: ObjectKind,
        spec: QueueSpec,
        exist_ok: bool,
    ) -> Reply<'static> {
        match kind {
            ObjectKind::Queue => self.create(name, spec, exist_ok),
            _ => Reply::Error(ErrorCode::NotAllowed),
        }
    }

    pub(super) fn act_reply_bound(&mut self, _i: usize, _handle: Handle, _action: Action) -> usize {
        SMALL_REPLY_BOUND
    }

    pub(super) fn act(&mut self, i: usize, id: u32, _handle: Handle, _action: Action) {
        self.reply_error(i, id, ErrorCode::NotAllowed);
    }

    pub(super) fn drop_holdings(&mut self, _i: usize) {}

    pub(super) fn waiter_left(&mut self, _waiter: Waiter) {}
}
