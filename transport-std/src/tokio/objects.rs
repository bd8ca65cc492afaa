//! Object proxies for async code: events, locks, semaphores, values, dicts, barriers,
//! conditions, lists and registered calls (PROTOCOL.md §15). Each method is the blocking
//! proxy's (`crate::client::ops`), sent through the connection task. The connection holds
//! locks and permits, as for the blocking client: every clone of a client shares them, and
//! they are released when it closes.
//!
//! A dropped future withdraws its request (`Cancel`); a lock or permit the manager granted
//! before the withdrawal arrived stays held by the connection until released.

use std::marker::PhantomData;
use std::time::Duration;

use depot_core::wire::{Action, ErrorCode, ObjectInfo, ObjectKind, Wait};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{unexpected, Client, Request};
use crate::client::conn::Outcome;
use crate::client::ops::{self, Act};
use crate::client::proxy::wait_for;
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
    async fn open(client: &Client, name: &str, kinds: &[ObjectKind]) -> Result<Object, Error> {
        match client.exchange(Request::Open(name.to_owned())).await? {
            Outcome::Opened(info) if kinds.contains(&info.kind) => Ok(Object {
                client: client.clone(),
                name: name.to_owned(),
                info,
            }),
            Outcome::Opened(_) => Err(Error::request(ErrorCode::WrongKind, name)),
            other => Err(unexpected(other, name)),
        }
    }

    /// Runs one proxy method.
    async fn run<R>(&self, act: Act<R>) -> Result<R, Error> {
        let handle = self.info.handle;
        let outcome = match act.wait {
            Some(wait) => {
                let action = &act.action;
                self.client
                    .call_blocking(wait, |wait| Request::Act(handle, action.clone(), wait))
                    .await?
            }
            None => {
                let request = Request::Act(handle, act.action, Wait::NoWait);
                self.client.exchange(request).await?
            }
        };
        (act.finish)(outcome, &self.name)
    }
}

impl Client {
    /// Calls the manager's registered handler `name` with `request` and waits for its
    /// response; `Err(CallFailed)` carries the handler's error or panic.
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        name: &str,
        request: &Req,
    ) -> Result<Resp, Error> {
        let o = Object::open(self, name, &[ObjectKind::Call]).await?;
        o.run(ops::call(request, Wait::Forever)?).await
    }

    /// [`Client::call`], waiting at most `timeout` for the response (`Err` with `Timeout`;
    /// the handler may still run to its end).
    pub async fn call_timeout<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        name: &str,
        request: &Req,
        timeout: Duration,
    ) -> Result<Resp, Error> {
        let o = Object::open(self, name, &[ObjectKind::Call]).await?;
        o.run(ops::call(request, wait_for(timeout))?).await
    }

    /// A proxy for the event `name`.
    pub async fn event(&self, name: &str) -> Result<Event, Error> {
        let o = Object::open(self, name, &[ObjectKind::Event]).await?;
        Ok(Event { o })
    }

    /// A proxy for the lock (or reentrant lock) `name`.
    pub async fn lock(&self, name: &str) -> Result<Lock, Error> {
        let o = Object::open(self, name, &[ObjectKind::Lock, ObjectKind::RLock]).await?;
        Ok(Lock { o })
    }

    /// A proxy for the semaphore (bounded or not) `name`.
    pub async fn semaphore(&self, name: &str) -> Result<Semaphore, Error> {
        let kinds = [ObjectKind::Semaphore, ObjectKind::BoundedSemaphore];
        let o = Object::open(self, name, &kinds).await?;
        Ok(Semaphore { o })
    }

    /// A proxy for the value `name`, holding a `T` (one value of the value model).
    pub async fn value<T: Serialize + DeserializeOwned>(
        &self,
        name: &str,
    ) -> Result<Value<T>, Error> {
        let o = Object::open(self, name, &[ObjectKind::Value]).await?;
        Ok(Value { o, _t: PhantomData })
    }

    /// A proxy for the dict `name`, from `K` to `V` (values of the value model).
    pub async fn dict<K, V>(&self, name: &str) -> Result<Dict<K, V>, Error>
    where
        K: Serialize + DeserializeOwned,
        V: Serialize + DeserializeOwned,
    {
        let o = Object::open(self, name, &[ObjectKind::Dict]).await?;
        Ok(Dict {
            o,
            _kv: PhantomData,
        })
    }

    /// A proxy for the barrier `name`.
    pub async fn barrier(&self, name: &str) -> Result<Barrier, Error> {
        let o = Object::open(self, name, &[ObjectKind::Barrier]).await?;
        Ok(Barrier { o })
    }

    /// A proxy for the condition `name`.
    pub async fn condition(&self, name: &str) -> Result<Condition, Error> {
        let o = Object::open(self, name, &[ObjectKind::Condition]).await?;
        Ok(Condition { o })
    }

    /// A proxy for the list `name` of `T`s (values of the value model).
    pub async fn list<T: Serialize + DeserializeOwned>(
        &self,
        name: &str,
    ) -> Result<List<T>, Error> {
        let o = Object::open(self, name, &[ObjectKind::List]).await?;
        Ok(List { o, _t: PhantomData })
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
    pub async fn wait(&self) -> Result<u32, Error> {
        self.o.run(ops::barrier_wait(Wait::Forever)).await
    }

    /// Waits at most `timeout`; running out breaks the barrier (`Err` with `Timeout`).
    pub async fn wait_timeout(&self, timeout: Duration) -> Result<u32, Error> {
        self.o.run(ops::barrier_wait(wait_for(timeout))).await
    }

    /// Parties waiting now.
    pub async fn n_waiting(&self) -> Result<u32, Error> {
        self.o.run(ops::len()).await
    }

    /// Whether the barrier is broken now (until [`Barrier::reset`]).
    pub async fn is_broken(&self) -> Result<bool, Error> {
        self.o.run(ops::is_broken()).await
    }

    /// Breaks the barrier: waiters and later waits fail with `Broken`.
    pub async fn abort(&self) -> Result<(), Error> {
        self.o.run(ops::fixed(Action::Abort)).await
    }

    /// Mends a broken barrier (its waiters fail with `Broken`).
    pub async fn reset(&self) -> Result<(), Error> {
        self.o.run(ops::fixed(Action::Reset)).await
    }
}

/// A condition (Python's `Condition`): a reentrant lock that its holder may give up while it
/// waits to be notified. The connection holds it, as it holds a [`Lock`].
#[derive(Debug, Clone)]
pub struct Condition {
    o: Object,
}

impl Condition {
    /// Takes the condition's lock (again, if this connection holds it), waiting as long as
    /// it takes.
    pub async fn acquire(&self) -> Result<(), Error> {
        self.o.run(ops::acquire(Wait::Forever)).await.map(drop)
    }

    /// Takes the lock if it is free now: whether it was.
    pub async fn try_acquire(&self) -> Result<bool, Error> {
        self.o.run(ops::acquire(Wait::NoWait)).await
    }

    /// Takes the lock, waiting at most `timeout`: whether it was taken.
    pub async fn acquire_timeout(&self, timeout: Duration) -> Result<bool, Error> {
        self.o.run(ops::acquire(wait_for(timeout))).await
    }

    /// Releases the lock once (`Err` with `NotOwner` if this connection does not hold it).
    pub async fn release(&self) -> Result<(), Error> {
        self.o.run(ops::release()).await
    }

    /// Gives the lock up until another client's notify, then waits for it again (the lock
    /// is held again when this returns; `Err` with `NotOwner` if it was not held).
    pub async fn wait(&self) -> Result<(), Error> {
        self.o.run(ops::wait(None)).await.map(drop)
    }

    /// [`Condition::wait`] for at most `timeout`: whether it was notified (the lock is held
    /// again either way).
    pub async fn wait_timeout(&self, timeout: Duration) -> Result<bool, Error> {
        self.o.run(ops::wait(Some(timeout))).await
    }

    /// Wakes at most `n` waiters (they take the lock after this connection releases it).
    pub async fn notify(&self, n: u32) -> Result<(), Error> {
        self.o.run(ops::fixed(Action::Notify { n })).await
    }

    /// Wakes every waiter.
    pub async fn notify_all(&self) -> Result<(), Error> {
        self.notify(u32::MAX).await
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
    pub async fn push(&self, value: &T) -> Result<(), Error> {
        self.o.run(ops::push(value)?).await
    }

    /// Inserts `value` before `index`, clamped to the list (Python's `insert`).
    pub async fn insert(&self, index: i32, value: &T) -> Result<(), Error> {
        self.o.run(ops::insert_at(index, value)?).await
    }

    /// The value at `index`, if there is one.
    pub async fn get(&self, index: i32) -> Result<Option<T>, Error> {
        self.o.run(ops::at(index)).await
    }

    /// Replaces the value at `index` (`Err` with `NoSuchKey` past either end).
    pub async fn set(&self, index: i32, value: &T) -> Result<(), Error> {
        self.o.run(ops::replace(index, value)?).await
    }

    /// Removes the value at `index`: it, if there was one (`-1`: the last, Python's `pop()`).
    pub async fn pop(&self, index: i32) -> Result<Option<T>, Error> {
        self.o.run(ops::pop_at(index)).await
    }

    /// The first position of `value`, if it is there.
    pub async fn index_of(&self, value: &T) -> Result<Option<u32>, Error> {
        self.o.run(ops::find(value)?).await
    }

    /// How many times `value` is there.
    pub async fn count(&self, value: &T) -> Result<u32, Error> {
        self.o.run(ops::count_of(value)?).await
    }

    /// Removes the first `value`: whether there was one.
    pub async fn remove(&self, value: &T) -> Result<bool, Error> {
        self.o.run(ops::remove_value(value)?).await
    }

    /// Reverses the list in place.
    pub async fn reverse(&self) -> Result<(), Error> {
        self.o.run(ops::fixed(Action::Reverse)).await
    }

    /// Values now.
    pub async fn len(&self) -> Result<u32, Error> {
        self.o.run(ops::len()).await
    }

    /// Whether the list is empty now.
    pub async fn is_empty(&self) -> Result<bool, Error> {
        self.len().await.map(|n| n == 0)
    }

    /// Every value, in order.
    pub async fn to_vec(&self) -> Result<Vec<T>, Error> {
        self.o.run(ops::to_vec()).await
    }
}

/// An event: a flag clients set, clear and wait for (Python's `Event`).
#[derive(Debug, Clone)]
pub struct Event {
    o: Object,
}

impl Event {
    /// Sets the flag; every waiter wakes.
    pub async fn set(&self) -> Result<(), Error> {
        self.o.run(ops::set()).await
    }

    /// Clears the flag.
    pub async fn clear(&self) -> Result<(), Error> {
        self.o.run(ops::clear()).await
    }

    /// Whether the flag is set.
    pub async fn is_set(&self) -> Result<bool, Error> {
        self.o.run(ops::is_set()).await
    }

    /// Waits until the flag is set.
    pub async fn wait(&self) -> Result<(), Error> {
        self.o.run(ops::wait(None)).await.map(drop)
    }

    /// Waits at most `timeout` for the flag: whether it is set.
    pub async fn wait_timeout(&self, timeout: Duration) -> Result<bool, Error> {
        self.o.run(ops::wait(Some(timeout))).await
    }
}

/// A lock held by one connection at a time (Python's `Lock`, or `RLock` when declared so);
/// released when the connection holding it closes.
#[derive(Debug, Clone)]
pub struct Lock {
    o: Object,
}

impl Lock {
    /// Takes the lock, waiting as long as it takes.
    pub async fn acquire(&self) -> Result<(), Error> {
        self.o.run(ops::acquire(Wait::Forever)).await.map(drop)
    }

    /// Takes the lock if it is free now: whether it was.
    pub async fn try_acquire(&self) -> Result<bool, Error> {
        self.o.run(ops::acquire(Wait::NoWait)).await
    }

    /// Takes the lock, waiting at most `timeout`: whether it was taken.
    pub async fn acquire_timeout(&self, timeout: Duration) -> Result<bool, Error> {
        self.o.run(ops::acquire(wait_for(timeout))).await
    }

    /// Releases the lock; `Err` (not owner) if this connection does not hold it.
    pub async fn release(&self) -> Result<(), Error> {
        self.o.run(ops::release()).await
    }

    /// Whether the lock is free now.
    pub async fn is_free(&self) -> Result<bool, Error> {
        self.o.run(ops::len()).await.map(|n| n > 0)
    }
}

/// A semaphore: permits taken and given back (Python's `Semaphore` / `BoundedSemaphore`); the
/// permits a connection holds come back when it closes.
#[derive(Debug, Clone)]
pub struct Semaphore {
    o: Object,
}

impl Semaphore {
    /// Takes a permit, waiting as long as it takes.
    pub async fn acquire(&self) -> Result<(), Error> {
        self.o.run(ops::acquire(Wait::Forever)).await.map(drop)
    }

    /// Takes a permit if one is free now: whether one was.
    pub async fn try_acquire(&self) -> Result<bool, Error> {
        self.o.run(ops::acquire(Wait::NoWait)).await
    }

    /// Takes a permit, waiting at most `timeout`: whether one was taken.
    pub async fn acquire_timeout(&self, timeout: Duration) -> Result<bool, Error> {
        self.o.run(ops::acquire(wait_for(timeout))).await
    }

    /// Gives a permit back (`Err` with `Overflow` beyond a bounded semaphore's bound).
    pub async fn release(&self) -> Result<(), Error> {
        self.o.run(ops::release()).await
    }

    /// Permits free now.
    pub async fn get_value(&self) -> Result<u32, Error> {
        self.o.run(ops::len()).await
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
    pub async fn get(&self) -> Result<T, Error> {
        self.o.run(ops::get()).await
    }

    /// Replaces the value.
    pub async fn set(&self, value: &T) -> Result<(), Error> {
        self.o.run(ops::put(value)?).await
    }

    /// Replaces the value with `value` if it is `expected` now (compared by encoding):
    /// whether it was.
    pub async fn compare_and_set(&self, expected: &T, value: &T) -> Result<bool, Error> {
        self.o.run(ops::compare_and_set(expected, value)?).await
    }
}

/// A bounded map from `K` to `V` (Python's `dict`), entries in insertion order, keys compared
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
    pub async fn get(&self, key: &K) -> Result<Option<V>, Error> {
        self.o.run(ops::lookup(key)?).await
    }

    /// Inserts or replaces the entry for `key` (`Err` with `Full` when the dict has no room).
    pub async fn insert(&self, key: &K, value: &V) -> Result<(), Error> {
        self.o.run(ops::insert(key, value)?).await
    }

    /// Removes the entry for `key`: its value, if there was one.
    pub async fn remove(&self, key: &K) -> Result<Option<V>, Error> {
        self.o.run(ops::remove(key)?).await
    }

    /// Entries now.
    pub async fn len(&self) -> Result<u32, Error> {
        self.o.run(ops::len()).await
    }

    /// Whether the dict is empty now.
    pub async fn is_empty(&self) -> Result<bool, Error> {
        self.len().await.map(|n| n == 0)
    }

    /// The keys, in insertion order.
    pub async fn keys(&self) -> Result<Vec<K>, Error> {
        self.o.run(ops::keys()).await
    }

    /// The entries, in insertion order.
    pub async fn items(&self) -> Result<Vec<(K, V)>, Error> {
        self.o.run(ops::items()).await
    }

    /// Waits until `key` is present (at most `timeout`, if given): its value.
    pub async fn wait_for_key(&self, key: &K, timeout: Option<Duration>) -> Result<V, Error> {
        self.o.run(ops::wait_for_key(key, timeout)?).await
    }
}
