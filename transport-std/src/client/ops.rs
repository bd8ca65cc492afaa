//! What each object proxy method sends and how its reply reads, shared by the blocking
//! proxies (`objects.rs`) and the tokio ones (`crate::tokio::objects`): only how the request
//! travels differs, so each proxy method is one [`Act`] run by its client's `run`.

use std::time::Duration;

use depot_core::wire::{Action, ErrorCode, Wait};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::conn::Outcome;
use super::proxy::{decode, encode, wait_for};
use crate::Error;

/// An action with its values owned, so a request may outlive its caller's borrow (and be
/// sent again when the manager had no room to park it).
#[derive(Debug, Clone)]
pub(crate) enum ActionBuf {
    /// An action without values or wait.
    Fixed(Action<'static>),
    /// An event's, barrier's or condition's `Wait`.
    Wait,
    Acquire,
    Put(Vec<u8>),
    CompareAndSet(Vec<u8>, Vec<u8>),
    Lookup(Vec<u8>),
    Insert(Vec<u8>, Vec<u8>),
    Remove(Vec<u8>),
    WaitKey(Vec<u8>),
    Call(Vec<u8>),
    Append(Vec<u8>),
    InsertAt(i32, Vec<u8>),
    Replace(i32, Vec<u8>),
    Find(Vec<u8>),
    CountOf(Vec<u8>),
    RemoveValue(Vec<u8>),
}

impl ActionBuf {
    /// The action, waiting `wait` if it is one that waits.
    pub(crate) fn action(&self, wait: Wait) -> Action<'_> {
        match self {
            ActionBuf::Fixed(action) => *action,
            ActionBuf::Wait => Action::Wait { wait },
            ActionBuf::Acquire => Action::Acquire { wait },
            ActionBuf::Put(value) => Action::Put { value },
            ActionBuf::CompareAndSet(expected, value) => Action::CompareAndSet { expected, value },
            ActionBuf::Lookup(key) => Action::Lookup { key },
            ActionBuf::Insert(key, value) => Action::Insert { key, value },
            ActionBuf::Remove(key) => Action::Remove { key },
            ActionBuf::WaitKey(key) => Action::WaitKey { key, wait },
            ActionBuf::Call(request) => Action::Call { request, wait },
            ActionBuf::Append(value) => Action::Append { value },
            &ActionBuf::InsertAt(index, ref value) => Action::InsertAt { index, value },
            &ActionBuf::Replace(index, ref value) => Action::Replace { index, value },
            ActionBuf::Find(value) => Action::Find { value },
            ActionBuf::CountOf(value) => Action::CountOf { value },
            ActionBuf::RemoveValue(value) => Action::RemoveValue { value },
        }
    }
}

/// One proxy method: its action, how long it may block on the manager (`Some`: sent again
/// with what is left of that time when refused for lack of room), and how its reply reads
/// (given the object's name, for errors).
pub(crate) struct Act<R> {
    pub(crate) action: ActionBuf,
    pub(crate) wait: Option<Wait>,
    pub(crate) finish: fn(Outcome, &str) -> Result<R, Error>,
}

fn act<R>(action: ActionBuf, finish: fn(Outcome, &str) -> Result<R, Error>) -> Act<R> {
    Act {
        action,
        wait: None,
        finish,
    }
}

fn blocking<R>(
    action: ActionBuf,
    wait: Wait,
    finish: fn(Outcome, &str) -> Result<R, Error>,
) -> Act<R> {
    Act {
        action,
        wait: Some(wait),
        finish,
    }
}

/// The error for a reply that is not the success a request expects.
pub(crate) fn unexpected(outcome: Outcome, name: &str) -> Error {
    match outcome {
        Outcome::Error(code) => Error::request(code, name),
        Outcome::Refused { .. } => Error::request(ErrorCode::WaiterLimit, name),
        // A reply of the wrong kind: the manager broke the protocol.
        _ => Error::Protocol(depot_core::Error::Closed(
            depot_core::wire::CloseReason::Unexpected,
        )),
    }
}

fn done(outcome: Outcome, name: &str) -> Result<(), Error> {
    match outcome {
        Outcome::Done => Ok(()),
        other => Err(unexpected(other, name)),
    }
}

/// `true` for `Flag(true)`, `false` for a wait that ran out.
fn flag(outcome: Outcome, name: &str) -> Result<bool, Error> {
    match outcome {
        Outcome::Flag(flag) => Ok(flag),
        Outcome::Error(ErrorCode::Timeout) => Ok(false),
        other => Err(unexpected(other, name)),
    }
}

fn count(outcome: Outcome, name: &str) -> Result<u32, Error> {
    match outcome {
        Outcome::Count(n) => Ok(n),
        other => Err(unexpected(other, name)),
    }
}

fn value<T: DeserializeOwned>(outcome: Outcome, name: &str) -> Result<T, Error> {
    match outcome {
        Outcome::Value(bytes) => decode(bytes),
        other => Err(unexpected(other, name)),
    }
}

/// A value, or `None` for a key (or position) that is not there.
fn optional<T: DeserializeOwned>(outcome: Outcome, name: &str) -> Result<Option<T>, Error> {
    match outcome {
        Outcome::Error(ErrorCode::NoSuchKey) => Ok(None),
        other => value(other, name).map(Some),
    }
}

fn values<T: DeserializeOwned>(outcome: Outcome, name: &str) -> Result<Vec<T>, Error> {
    match outcome {
        Outcome::Values(values) => values.into_iter().map(decode).collect(),
        other => Err(unexpected(other, name)),
    }
}

fn pairs<K: DeserializeOwned, V: DeserializeOwned>(
    outcome: Outcome,
    name: &str,
) -> Result<Vec<(K, V)>, Error> {
    match outcome {
        Outcome::Values(flat) => {
            let mut out = Vec::with_capacity(flat.len() / 2);
            let mut it = flat.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                out.push((decode(k)?, decode(v)?));
            }
            Ok(out)
        }
        other => Err(unexpected(other, name)),
    }
}

fn response<T: DeserializeOwned>(outcome: Outcome, name: &str) -> Result<T, Error> {
    match outcome {
        Outcome::Failed(message) => Err(Error::CallFailed {
            call: name.to_owned(),
            message,
        }),
        other => value(other, name),
    }
}

/// A wait of at most `timeout` (`None`: for ever).
fn wait_of(timeout: Option<Duration>) -> Wait {
    timeout.map_or(Wait::Forever, wait_for)
}

/// An event's `set`, `clear`, `is_set`; an event's (or condition's) wait: whether the flag
/// is set (or it was notified).
pub(crate) fn set() -> Act<()> {
    act(ActionBuf::Fixed(Action::Set), done)
}

pub(crate) fn clear() -> Act<()> {
    act(ActionBuf::Fixed(Action::Clear), done)
}

pub(crate) fn is_set() -> Act<bool> {
    act(ActionBuf::Fixed(Action::IsSet), flag)
}

pub(crate) fn wait(timeout: Option<Duration>) -> Act<bool> {
    blocking(ActionBuf::Wait, wait_of(timeout), flag)
}

/// Takes a permit (a lock's, a semaphore's): whether one was taken in time.
pub(crate) fn acquire(wait: Wait) -> Act<bool> {
    blocking(ActionBuf::Acquire, wait, flag)
}

pub(crate) fn release() -> Act<()> {
    act(ActionBuf::Fixed(Action::Release), done)
}

/// Free permits, a dict's entries, a list's values.
pub(crate) fn len() -> Act<u32> {
    act(ActionBuf::Fixed(Action::Count), count)
}

pub(crate) fn get<T: DeserializeOwned>() -> Act<T> {
    act(ActionBuf::Fixed(Action::Get), value::<T>)
}

pub(crate) fn put<T: Serialize>(v: &T) -> Result<Act<()>, Error> {
    Ok(act(ActionBuf::Put(encode(v)?), done))
}

pub(crate) fn compare_and_set<T: Serialize>(expected: &T, v: &T) -> Result<Act<bool>, Error> {
    let action = ActionBuf::CompareAndSet(encode(expected)?, encode(v)?);
    Ok(act(action, flag))
}

pub(crate) fn lookup<K: Serialize, V: DeserializeOwned>(key: &K) -> Result<Act<Option<V>>, Error> {
    Ok(act(ActionBuf::Lookup(encode(key)?), optional::<V>))
}

pub(crate) fn insert<K: Serialize, V: Serialize>(key: &K, v: &V) -> Result<Act<()>, Error> {
    Ok(act(ActionBuf::Insert(encode(key)?, encode(v)?), done))
}

pub(crate) fn remove<K: Serialize, V: DeserializeOwned>(key: &K) -> Result<Act<Option<V>>, Error> {
    Ok(act(ActionBuf::Remove(encode(key)?), optional::<V>))
}

pub(crate) fn keys<K: DeserializeOwned>() -> Act<Vec<K>> {
    act(ActionBuf::Fixed(Action::Keys), values::<K>)
}

pub(crate) fn items<K: DeserializeOwned, V: DeserializeOwned>() -> Act<Vec<(K, V)>> {
    act(ActionBuf::Fixed(Action::Entries), pairs::<K, V>)
}

pub(crate) fn wait_for_key<K: Serialize, V: DeserializeOwned>(
    key: &K,
    timeout: Option<Duration>,
) -> Result<Act<V>, Error> {
    Ok(blocking(
        ActionBuf::WaitKey(encode(key)?),
        wait_of(timeout),
        value::<V>,
    ))
}

/// A barrier's wait: this party's arrival index (running out breaks it: `Err` with `Timeout`).
pub(crate) fn barrier_wait(wait: Wait) -> Act<u32> {
    blocking(ActionBuf::Wait, wait, count)
}

/// A barrier's `is_broken`.
pub(crate) fn is_broken() -> Act<bool> {
    act(ActionBuf::Fixed(Action::IsBroken), flag)
}

/// A barrier's `abort`, `reset`; a list's `reverse`; a condition's `notify`: any action
/// answered `Done`.
pub(crate) fn fixed(action: Action<'static>) -> Act<()> {
    act(ActionBuf::Fixed(action), done)
}

/// A list's `append`.
pub(crate) fn push<T: Serialize>(v: &T) -> Result<Act<()>, Error> {
    Ok(act(ActionBuf::Append(encode(v)?), done))
}

/// A list's `insert` before `index`.
pub(crate) fn insert_at<T: Serialize>(index: i32, v: &T) -> Result<Act<()>, Error> {
    Ok(act(ActionBuf::InsertAt(index, encode(v)?), done))
}

/// A list's value at `index`, if there is one.
pub(crate) fn at<T: DeserializeOwned>(index: i32) -> Act<Option<T>> {
    act(ActionBuf::Fixed(Action::At { index }), optional::<T>)
}

/// Replaces a list's value at `index`.
pub(crate) fn replace<T: Serialize>(index: i32, v: &T) -> Result<Act<()>, Error> {
    Ok(act(ActionBuf::Replace(index, encode(v)?), done))
}

/// Removes a list's value at `index`: it, if there was one.
pub(crate) fn pop_at<T: DeserializeOwned>(index: i32) -> Act<Option<T>> {
    act(ActionBuf::Fixed(Action::PopAt { index }), optional::<T>)
}

/// The first position of a value in a list, if it is there.
pub(crate) fn find<T: Serialize>(v: &T) -> Result<Act<Option<u32>>, Error> {
    Ok(act(ActionBuf::Find(encode(v)?), position))
}

/// How many times a value is in a list.
pub(crate) fn count_of<T: Serialize>(v: &T) -> Result<Act<u32>, Error> {
    Ok(act(ActionBuf::CountOf(encode(v)?), count))
}

/// Removes a value's first copy from a list: whether there was one.
pub(crate) fn remove_value<T: Serialize>(v: &T) -> Result<Act<bool>, Error> {
    Ok(act(ActionBuf::RemoveValue(encode(v)?), found))
}

/// A list's values, in order.
pub(crate) fn to_vec<T: DeserializeOwned>() -> Act<Vec<T>> {
    act(ActionBuf::Fixed(Action::Entries), values::<T>)
}

fn position(outcome: Outcome, name: &str) -> Result<Option<u32>, Error> {
    match outcome {
        Outcome::Count(n) => Ok(Some(n)),
        Outcome::Error(ErrorCode::NoSuchKey) => Ok(None),
        other => Err(unexpected(other, name)),
    }
}

fn found(outcome: Outcome, name: &str) -> Result<bool, Error> {
    match outcome {
        Outcome::Done => Ok(true),
        Outcome::Error(ErrorCode::NoSuchKey) => Ok(false),
        other => Err(unexpected(other, name)),
    }
}

/// A registered call: its response, or `CallFailed` with the handler's error.
pub(crate) fn call<Req: Serialize, Resp: DeserializeOwned>(
    request: &Req,
    wait: Wait,
) -> Result<Act<Resp>, Error> {
    Ok(blocking(
        ActionBuf::Call(encode(request)?),
        wait,
        response::<Resp>,
    ))
}

/// A registered call with its request already one value of the value model: the response's
/// bytes.
pub(crate) fn call_raw(request: Vec<u8>, wait: Wait) -> Act<Vec<u8>> {
    blocking(ActionBuf::Call(request), wait, raw_response)
}

fn raw_response(outcome: Outcome, name: &str) -> Result<Vec<u8>, Error> {
    match outcome {
        Outcome::Failed(message) => Err(Error::CallFailed {
            call: name.to_owned(),
            message,
        }),
        Outcome::Value(bytes) => Ok(bytes),
        other => Err(unexpected(other, name)),
    }
}
