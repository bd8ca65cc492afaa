//! Proxies for the objects beside queues: events, locks, semaphores, values, barriers and
//! dicts (PROTOCOL.md §15). Each holds a clone of its [`Client`]; the connection is what holds
//! a lock or a permit, so every clone of a client shares them, and they are released when the
//! connection ends (the process dies, the last clone is dropped).

use std::marker::PhantomData;
use std::time::Duration;

use depot_core::wire::{Action, ErrorCode, ObjectInfo, ObjectKind, Op, Wait};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tracing::warn;

use super::conn::Outcome;
use super::ops::{self, Act};
use super::proxy::wait_for;
use super::Client;
use crate::Error;

/// An opened object: what every proxy holds.
#[derive(Debug, Clone)]
struct Object {
    client: Client,
    name: String,
    info: ObjectInfo,
}

impl Object {
    /// Opens `name`, which must be of one of `kinds`.
    fn open(client: &Client, name: &str, kinds: &[ObjectKind]) -> Result<Object, Error> {
        let outcome = client.depot("opening an object")?.call(Op::Open { name })?;
        Self::check(client, name, outcome, kinds)
    }

    fn check(
        client: &Client,
        name: &str,
        outcome: Outcome,
        kinds: &[ObjectKind],
    ) -> Result<Object, Error> {
        match outcome {
            Outcome::Opened(info) if kinds.contains(&info.kind) => Ok(Object {
                client: client.clone(),
                name: name.to_owned(),
                info,
            }),
            Outcome::Opened(_) => Err(super::code_error(ErrorCode::WrongKind, name)),
            other => Err(client.unexpected(other, name)),
        }
    }

    fn act(&self, action: Action<'_>) -> Result<Outcome, Error> {
        let handle = self.info.handle;
        self.client.conn()?.call(Op::Act { handle, action })
    }

    /// An action that may block on the manager: sent again, with what is left of its time,
    /// when the manager had no room to park it (other threads' blocked calls hold it).
    fn blocking<'a>(
        &self,
        wait: Wait,
        action: impl Fn(Wait) -> Action<'a>,
    ) -> Result<Outcome, Error> {
        let start = std::time::Instant::now();
        let mut current = wait;
        loop {
            match self.act(action(current))? {
                Outcome::Refused { progress } => {
                    self.client.conn()?.wait_for_room(progress)?;
                    if let Wait::Millis(ms) = wait {
                        let total = Duration::from_millis(ms.into());
                        let left = total.saturating_sub(start.elapsed());
                        if left.is_zero() {
                            return Ok(Outcome::Error(ErrorCode::Timeout));
                        }
                        current = wait_for(left);
                    }
                }
                other => return Ok(other),
            }
        }
    }

    /// Runs one proxy method (see `super::ops`).
    fn run<R>(&self, act: Act<R>) -> Result<R, Error> {
        let outcome = match act.wait {
            Some(wait) => self.blocking(wait, |wait| act.action.action(wait))?,
            None => self.act(act.action.action(Wait::NoWait))?,
        };
        (act.finish)(outcome, &self.name)
    }

    /// Takes one permit (a lock's or a semaphore's), waiting as long as it takes.
    fn acquire(&self) -> Result<(), Error> {
        self.run(ops::acquire(Wait::Forever)).map(drop)
    }

    /// Takes one permit if one is free now: whether one was.
    fn try_acquire(&self) -> Result<bool, Error> {
        self.run(ops::acquire(Wait::NoWait))
    }

    /// Takes one permit, waiting at most `timeout`: whether one was taken.
    fn acquire_timeout(&self, timeout: Duration) -> Result<bool, Error> {
        self.run(ops::acquire(wait_for(timeout)))
    }

    /// Gives one permit back.
    fn release(&self) -> Result<(), Error> {
        self.run(ops::release())
    }

    /// Permits free now.
    fn free(&self) -> Result<u32, Error> {
        self.run(ops::len())
    }
}

impl Client {
    /// Creates the object `name` of `kind` (or opens it if one of that kind exists), when
    /// the manager allows creating: `capacity` is a semaphore's permits, a barrier's parties
    /// or a dict's most entries; `max_item` a value's or dict's bytes (PROTOCOL.md §15).
    pub fn create_object(
        &self,
        name: &str,
        kind: ObjectKind,
        capacity: u32,
        max_item: u32,
    ) -> Result<ObjectInfo, Error> {
        let spec = depot_core::QueueSpec {
            capacity,
            max_item,
            mode: depot_core::QueueMode::Value,
        };
        let outcome = self.depot("creating an object")?.call(Op::CreateObject {
            name,
            kind,
            spec,
            exist_ok: true,
        })?;
        Object::check(self, name, outcome, &[kind]).map(|o| o.info)
    }

    /// Calls the manager's registered handler `name` with `request` and waits for its
    /// response (see [`crate::ManagerBuilder::call`]); `Err(CallFailed)` carries the
    /// handler's error or panic.
    pub fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        name: &str,
        request: &Req,
    ) -> Result<Resp, Error> {
        self.call_with(name, request, Wait::Forever)
    }

    /// [`Client::call`], waiting at most `timeout` for the response (`Err` with `Timeout`;
    /// the handler may still run to its end).
    pub fn call_timeout<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        name: &str,
        request: &Req,
        timeout: Duration,
    ) -> Result<Resp, Error> {
        self.call_with(name, request, wait_for(timeout))
    }

    fn call_with<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        name: &str,
        request: &Req,
        wait: Wait,
    ) -> Result<Resp, Error> {
        let o = Object::open(self, name, &[ObjectKind::Call])?;
        o.run(ops::call(request, wait)?)
    }

    /// [`Client::call_timeout`] with the request already encoded (one value of the value
    /// model) and the response's bytes as they came (`None`: wait as long as it takes).
    pub fn call_raw(
        &self,
        name: &str,
        request: &[u8],
        timeout: Option<Duration>,
    ) -> Result<Vec<u8>, Error> {
        let o = Object::open(self, name, &[ObjectKind::Call])?;
        let wait = timeout.map_or(Wait::Forever, wait_for);
        o.run(ops::call_raw(request.to_vec(), wait))
    }

    /// A proxy for the event `name`.
    pub fn event(&self, name: &str) -> Result<Event, Error> {
        Object::open(self, name, &[ObjectKind::Event]).map(|o| Event { o })
    }

    /// A proxy for the lock (or reentrant lock) `name`.
    pub fn lock(&self, name: &str) -> Result<Lock, Error> {
        Object::open(self, name, &[ObjectKind::Lock, ObjectKind::RLock]).map(|o| Lock { o })
    }

    /// A proxy for the semaphore (bounded or not) `name`.
    pub fn semaphore(&self, name: &str) -> Result<Semaphore, Error> {
        let kinds = [ObjectKind::Semaphore, ObjectKind::BoundedSemaphore];
        Object::open(self, name, &kinds).map(|o| Semaphore { o })
    }

    /// A proxy for the value `name`, holding a `T` (one value of the value model).
    pub fn value<T: Serialize + DeserializeOwned>(&self, name: &str) -> Result<Value<T>, Error> {
        Object::open(self, name, &[ObjectKind::Value]).map(|o| Value { o, _t: PhantomData })
    }

    /// A proxy for the barrier `name`.
    pub fn barrier(&self, name: &str) -> Result<Barrier, Error> {
        Object::open(self, name, &[ObjectKind::Barrier]).map(|o| Barrier { o })
    }

    /// A proxy for the condition `name`.
    pub fn condition(&self, name: &str) -> Result<Condition, Error> {
        Object::open(self, name, &[ObjectKind::Condition]).map(|o| Condition { o })
    }

    /// A proxy for the list `name` of `T`s (values of the value model).
    pub fn list<T: Serialize + DeserializeOwned>(&self, name: &str) -> Result<List<T>, Error> {
        Object::open(self, name, &[ObjectKind::List]).map(|o| List { o, _t: PhantomData })
    }

    /// A proxy for the dict `name`, from `K` to `V` (values of the value model).
    pub fn dict<K, V>(&self, name: &str) -> Result<Dict<K, V>, Error>
    where
        K: Serialize + DeserializeOwned,
        V: Serialize + DeserializeOwned,
    {
        Object::open(self, name, &[ObjectKind::Dict]).map(|o| Dict {
            o,
            _kv: PhantomData,
        })
    }
}

/// An event: a flag clients set, clear and wait for (Python's `Event`).
#[derive(Debug, Clone)]
pub struct Event {
    o: Object,
}

impl Event {
    /// Sets the flag; every waiter wakes.
    pub fn set(&self) -> Result<(), Error> {
        self.o.run(ops::set())
    }

    /// Clears the flag.
    pub fn clear(&self) -> Result<(), Error> {
        self.o.run(ops::clear())
    }

    /// Whether the flag is set.
    pub fn is_set(&self) -> Result<bool, Error> {
        self.o.run(ops::is_set())
    }

    /// Waits until the flag is set.
    pub fn wait(&self) -> Result<(), Error> {
        self.o.run(ops::wait(None)).map(drop)
    }

    /// Waits at most `timeout` for the flag: whether it is set.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<bool, Error> {
        self.o.run(ops::wait(Some(timeout)))
    }
}

/// A lock held by one connection at a time (Python's `Lock`, or `RLock` when declared so);
/// released when the connection holding it ends.
#[derive(Debug, Clone)]
pub struct Lock {
    o: Object,
}

impl Lock {
    /// Takes the lock, waiting as long as it takes.
    pub fn acquire(&self) -> Result<(), Error> {
        self.o.acquire()
    }

    /// Takes the lock if it is free now: whether it was.
    pub fn try_acquire(&self) -> Result<bool, Error> {
        self.o.try_acquire()
    }

    /// Takes the lock, waiting at most `timeout`: whether it was taken.
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<bool, Error> {
        self.o.acquire_timeout(timeout)
    }

    /// Releases the lock; `Err` (not owner) if this connection does not hold it.
    pub fn release(&self) -> Result<(), Error> {
        self.o.release()
    }

    /// Whether the lock is free now.
    pub fn is_free(&self) -> Result<bool, Error> {
        self.o.free().map(|n| n > 0)
    }

    /// Takes the lock and holds it until the guard is dropped.
    pub fn lock(&self) -> Result<LockGuard<'_>, Error> {
        self.acquire()?;
        Ok(LockGuard { lock: self })
    }
}

/// Holds a [`Lock`] until dropped (a failed release on drop is only logged: the manager
/// releases the lock anyway when the connection ends).
#[derive(Debug)]
pub struct LockGuard<'l> {
    lock: &'l Lock,
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.lock.release() {
            warn!(lock = %self.lock.o.name, "release failed: {e}");
        }
    }
}

/// A semaphore: permits taken and given back (Python's `Semaphore` / `BoundedSemaphore`); the
/// permits a connection holds come back when it ends.
#[derive(Debug, Clone)]
pub struct Semaphore {
    o: Object,
}

impl Semaphore {
    /// Takes a permit, waiting as long as it takes.
    pub fn acquire(&self) -> Result<(), Error> {
        self.o.acquire()
    }

    /// Takes a permit if one is free now: whether one was.
    pub fn try_acquire(&self) -> Result<bool, Error> {
        self.o.try_acquire()
    }

    /// Takes a permit, waiting at most `timeout`: whether one was taken.
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<bool, Error> {
        self.o.acquire_timeout(timeout)
    }

    /// Gives a permit back (`Err` with `Overflow` beyond a bounded semaphore's bound).
    pub fn release(&self) -> Result<(), Error> {
        self.o.release()
    }

    /// Permits free now.
    pub fn get_value(&self) -> Result<u32, Error> {
        self.o.free()
    }
}

/// One shared value of type `T` (Python's `Value`), `null` until set.
#[derive(Debug)]
pub struct Value<T> {
    o: Object,
    _t: PhantomData<fn() -> T>,
}

impl<T> Clone for Value<T> {
    fn clone(&self) -> Self {
        Value {
            o: self.o.clone(),
            _t: PhantomData,
        }
    }
}

impl<T: Serialize + DeserializeOwned> Value<T> {
    /// The value (decoding `null`, its value until first set, needs a `T` that is an
    /// `Option`).
    pub fn get(&self) -> Result<T, Error> {
        self.o.run(ops::get())
    }

    /// Replaces the value.
    pub fn set(&self, value: &T) -> Result<(), Error> {
        self.o.run(ops::put(value)?)
    }

    /// Replaces the value with `value` if it is `expected` now (compared by encoding):
    /// whether it was.
    pub fn compare_and_set(&self, expected: &T, value: &T) -> Result<bool, Error> {
        self.o.run(ops::compare_and_set(expected, value)?)
    }
}

/// A barrier for a fixed number of parties (Python's `Barrier`): broken when a party times
/// out or its connection ends.
#[derive(Debug, Clone)]
pub struct Barrier {
    o: Object,
}

impl Barrier {
    /// The parties it waits for.
    pub fn parties(&self) -> u32 {
        self.o.info.spec.capacity
    }

    /// Waits until every party has arrived: this party's arrival index (0 for the first).
    pub fn wait(&self) -> Result<u32, Error> {
        self.o.run(ops::barrier_wait(Wait::Forever))
    }

    /// Waits at most `timeout`; running out breaks the barrier (`Err` with `Timeout`).
    pub fn wait_timeout(&self, timeout: Duration) -> Result<u32, Error> {
        self.o.run(ops::barrier_wait(wait_for(timeout)))
    }

    /// Parties waiting now.
    pub fn n_waiting(&self) -> Result<u32, Error> {
        self.o.run(ops::len())
    }

    /// Whether the barrier is broken now (until [`Barrier::reset`]).
    pub fn is_broken(&self) -> Result<bool, Error> {
        self.o.run(ops::is_broken())
    }

    /// Breaks the barrier: waiters and later waits fail with `Broken`.
    pub fn abort(&self) -> Result<(), Error> {
        self.o.run(ops::fixed(Action::Abort))
    }

    /// Mends a broken barrier (its waiters fail with `Broken`).
    pub fn reset(&self) -> Result<(), Error> {
        self.o.run(ops::fixed(Action::Reset))
    }
}

/// A bounded map from `K` to `V` (Python's `dict`), values of the value model; keys compare
/// by their encoding.
#[derive(Debug)]
pub struct Dict<K, V> {
    o: Object,
    _kv: PhantomData<fn() -> (K, V)>,
}

impl<K, V> Clone for Dict<K, V> {
    fn clone(&self) -> Self {
        Dict {
            o: self.o.clone(),
            _kv: PhantomData,
        }
    }
}

impl<K, V> Dict<K, V>
where
    K: Serialize + DeserializeOwned,
    V: Serialize + DeserializeOwned,
{
    /// The value for `key`, if there is one.
    pub fn get(&self, key: &K) -> Result<Option<V>, Error> {
        self.o.run(ops::lookup(key)?)
    }

    /// Inserts or replaces the entry for `key` (`Err` with `Full` when the dict has no room).
    pub fn insert(&self, key: &K, value: &V) -> Result<(), Error> {
        self.o.run(ops::insert(key, value)?)
    }

    /// Removes the entry for `key`: its value, if there was one.
    pub fn remove(&self, key: &K) -> Result<Option<V>, Error> {
        self.o.run(ops::remove(key)?)
    }

    /// Entries now.
    pub fn len(&self) -> Result<u32, Error> {
        self.o.run(ops::len())
    }

    /// Whether the dict is empty now.
    pub fn is_empty(&self) -> Result<bool, Error> {
        self.len().map(|n| n == 0)
    }

    /// The keys, in insertion order.
    pub fn keys(&self) -> Result<Vec<K>, Error> {
        self.o.run(ops::keys())
    }

    /// The entries, in insertion order.
    pub fn items(&self) -> Result<Vec<(K, V)>, Error> {
        self.o.run(ops::items())
    }

    /// Waits until `key` is present (at most `timeout`, if given): its value.
    pub fn wait_for_key(&self, key: &K, timeout: Option<Duration>) -> Result<V, Error> {
        self.o.run(ops::wait_for_key(key, timeout)?)
    }
}

/// A condition (Python's `Condition`): a lock, reentrant, that its holder may give up while it
/// waits to be notified. The connection holds it, as it holds a [`Lock`].
#[derive(Debug, Clone)]
pub struct Condition {
    o: Object,
}

impl Condition {
    /// Takes the condition's lock (again, if this connection holds it), waiting as long as
    /// it takes.
    pub fn acquire(&self) -> Result<(), Error> {
        self.o.acquire()
    }

    /// Takes the lock if it is free now: whether it was.
    pub fn try_acquire(&self) -> Result<bool, Error> {
        self.o.try_acquire()
    }

    /// Takes the lock, waiting at most `timeout`: whether it was taken.
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<bool, Error> {
        self.o.acquire_timeout(timeout)
    }

    /// Releases the lock once (`Err` with `NotOwner` if this connection does not hold it).
    pub fn release(&self) -> Result<(), Error> {
        self.o.release()
    }

    /// Gives the lock up until another client's notify, then waits for it again (the lock
    /// is held again when this returns; `Err` with `NotOwner` if it was not held).
    pub fn wait(&self) -> Result<(), Error> {
        self.o.run(ops::wait(None)).map(drop)
    }

    /// [`Condition::wait`] for at most `timeout`: whether it was notified (the lock is held
    /// again either way).
    pub fn wait_timeout(&self, timeout: Duration) -> Result<bool, Error> {
        self.o.run(ops::wait(Some(timeout)))
    }

    /// Wakes at most `n` waiters (they take the lock after this connection releases it).
    pub fn notify(&self, n: u32) -> Result<(), Error> {
        self.o.run(ops::fixed(Action::Notify { n }))
    }

    /// Wakes every waiter.
    pub fn notify_all(&self) -> Result<(), Error> {
        self.notify(u32::MAX)
    }
}

/// A list of `T`s (Python's `list`), bounded in entries and bytes; positions are `i32`s, from
/// the end when negative, as in Python. Values compare by their encoding.
#[derive(Debug)]
pub struct List<T> {
    o: Object,
    _t: PhantomData<fn() -> T>,
}

impl<T> Clone for List<T> {
    fn clone(&self) -> Self {
        List {
            o: self.o.clone(),
            _t: PhantomData,
        }
    }
}

impl<T: Serialize + DeserializeOwned> List<T> {
    /// Adds `value` at the end (`Err` with `Full` when the list has no room).
    pub fn push(&self, value: &T) -> Result<(), Error> {
        self.o.run(ops::push(value)?)
    }

    /// Inserts `value` before `index`, clamped to the list (Python's `insert`).
    pub fn insert(&self, index: i32, value: &T) -> Result<(), Error> {
        self.o.run(ops::insert_at(index, value)?)
    }

    /// The value at `index`, if there is one.
    pub fn get(&self, index: i32) -> Result<Option<T>, Error> {
        self.o.run(ops::at(index))
    }

    /// Replaces the value at `index` (`Err` with `NoSuchKey` past either end).
    pub fn set(&self, index: i32, value: &T) -> Result<(), Error> {
        self.o.run(ops::replace(index, value)?)
    }

    /// Removes the value at `index`: it, if there was one (`-1`: the last, Python's `pop()`).
    pub fn pop(&self, index: i32) -> Result<Option<T>, Error> {
        self.o.run(ops::pop_at(index))
    }

    /// The first position of `value`, if it is there.
    pub fn index_of(&self, value: &T) -> Result<Option<u32>, Error> {
        self.o.run(ops::find(value)?)
    }

    /// How many times `value` is there.
    pub fn count(&self, value: &T) -> Result<u32, Error> {
        self.o.run(ops::count_of(value)?)
    }

    /// Removes the first `value`: whether there was one.
    pub fn remove(&self, value: &T) -> Result<bool, Error> {
        self.o.run(ops::remove_value(value)?)
    }

    /// Reverses the list in place.
    pub fn reverse(&self) -> Result<(), Error> {
        self.o.run(ops::fixed(Action::Reverse))
    }

    /// Values now.
    pub fn len(&self) -> Result<u32, Error> {
        self.o.run(ops::len())
    }

    /// Whether the list is empty now.
    pub fn is_empty(&self) -> Result<bool, Error> {
        self.len().map(|n| n == 0)
    }

    /// Every value, in order.
    pub fn to_vec(&self) -> Result<Vec<T>, Error> {
        self.o.run(ops::to_vec())
    }
}
