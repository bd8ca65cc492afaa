//! Python proxies of the objects beside queues (PROTOCOL.md §15): the methods each kind
//! exposes, and how a call maps to an [`Action`] and its reply back to what Python expects.
//!
//! An object's ident is `d`, a letter for its kind and its handle in hex (a queue's letter is
//! `q`), so every connection knows the kind from the ident alone. The exposed names are those
//! of Python's own `threading` objects and of `SyncManager`'s typed proxies (`EventProxy`,
//! `AcquirerProxy`, `ValueProxy`, `BarrierProxy`), so `AutoProxy` and those proxies both work.

use crate::wire::{Action, ErrorCode, ObjectKind, Reply, Wait};

use super::conn::Out;

/// The ident letter of each kind.
pub(super) const fn letter(kind: ObjectKind) -> u8 {
    match kind {
        ObjectKind::Queue => b'q',
        ObjectKind::Event => b'e',
        ObjectKind::Lock => b'l',
        ObjectKind::RLock => b'r',
        ObjectKind::Semaphore => b's',
        ObjectKind::BoundedSemaphore => b'b',
        ObjectKind::Value => b'v',
        ObjectKind::Barrier => b'w',
        ObjectKind::Dict => b'm',
        ObjectKind::Call => b'c',
        ObjectKind::Condition => b'k',
        ObjectKind::List => b'a',
    }
}

/// The kind an ident letter names.
pub(super) fn kind_of(letter: u8) -> Option<ObjectKind> {
    Some(match letter {
        b'q' => ObjectKind::Queue,
        b'e' => ObjectKind::Event,
        b'l' => ObjectKind::Lock,
        b'r' => ObjectKind::RLock,
        b's' => ObjectKind::Semaphore,
        b'b' => ObjectKind::BoundedSemaphore,
        b'v' => ObjectKind::Value,
        b'w' => ObjectKind::Barrier,
        b'm' => ObjectKind::Dict,
        b'c' => ObjectKind::Call,
        b'k' => ObjectKind::Condition,
        b'a' => ObjectKind::List,
        _ => return None,
    })
}

const ACQUIRER: &[&str] = &["__enter__", "__exit__", "acquire", "release"];

/// The methods a proxy of `kind` may call (a queue's are [`super::conn::EXPOSED`]).
pub(super) fn exposed(kind: ObjectKind) -> &'static [&'static str] {
    match kind {
        ObjectKind::Event => &["clear", "is_set", "set", "wait"],
        ObjectKind::Lock | ObjectKind::RLock => {
            &["__enter__", "__exit__", "acquire", "locked", "release"]
        }
        ObjectKind::Semaphore | ObjectKind::BoundedSemaphore => {
            &["__enter__", "__exit__", "acquire", "get_value", "release"]
        }
        ObjectKind::Value => &["compare_and_set", "get", "set"],
        // `__getattribute__` is answered but not listed: `AutoProxy` would define it and
        // recurse.
        ObjectKind::Barrier => &["abort", "n_waiting", "reset", "wait"],
        ObjectKind::Dict => &[
            "__contains__",
            "__delitem__",
            "__getitem__",
            "__len__",
            "__setitem__",
            "get",
            "items",
            "keys",
            "pop",
            "values",
            "wait_for_key",
        ],
        // `proxy(request)` or `proxy.call(request)`.
        ObjectKind::Call => &["__call__", "call"],
        // `ConditionProxy`'s, and the lock's `with`.
        ObjectKind::Condition => &[
            "__enter__",
            "__exit__",
            "acquire",
            "notify",
            "notify_all",
            "release",
            "wait",
        ],
        // What a bounded list of values can do of `ListProxy`'s methods.
        ObjectKind::List => &[
            "__contains__",
            "__delitem__",
            "__getitem__",
            "__len__",
            "__setitem__",
            "append",
            "count",
            "index",
            "insert",
            "pop",
            "remove",
            "reverse",
        ],
        ObjectKind::Queue => ACQUIRER,
    }
}

/// A method call on an object, awaiting its reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ObjCall {
    /// `None` once done: `set`, `clear`, `release`, `__exit__`, `abort`, `reset`, a value's
    /// `set`, a dict's `__setitem__`.
    Done,
    /// `True`/`False`; a wait that ran out is `False`.
    Flag,
    /// A lock is `locked()` when it has no free permit.
    Locked,
    /// A number.
    Int,
    /// A value.
    Value,
    /// A barrier's `wait`: its index, or `BrokenBarrierError`.
    BarrierWait,
    /// A dict lookup: the value, or `KeyError`.
    Item,
    /// A dict's `get`, or `pop` with a default: the value, or the default (`None` if not given).
    ItemOr(Fallback),
    /// `__contains__`: whether the key is there.
    Contains,
    /// `__delitem__`: `None`, or `KeyError`.
    Delete,
    /// A dict read as a namespace (`NamespaceProxy`): the value, or `AttributeError`.
    Attr,
    /// A namespace's `__delattr__`: `None`, or `AttributeError`.
    DelAttr,
    /// A dict's `keys`, `values` or `items`: a list.
    List(ListOf),
    /// A list's value at an index: the value, or `IndexError`.
    AtIndex,
    /// A list's `__setitem__`, `__delitem__`: `None`, or `IndexError`.
    IndexDone,
    /// A list's `index`: the position, or `ValueError`.
    Position,
    /// A list's `remove`: `None`, or `ValueError`.
    Removed,
}

/// The most bytes a default of a dict's `get`/`pop` may take, converted as an item: it is kept
/// in the connection until the manager answers.
pub(super) const DEFAULT_MAX: usize = 32;

/// A default given to a dict's `get` or `pop`, converted as an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Fallback {
    len: u8,
    bytes: [u8; DEFAULT_MAX],
}

impl Fallback {
    /// Python's `None`.
    pub(super) const NONE: Fallback = {
        let mut bytes = [0; DEFAULT_MAX];
        bytes[0] = crate::objects::NULL[0];
        Fallback { len: 1, bytes }
    };

    /// A default converted into `bytes` by `fill`, which returns its length.
    pub(super) fn new<E>(fill: impl FnOnce(&mut [u8]) -> Result<usize, E>) -> Result<Fallback, E> {
        let mut bytes = [0; DEFAULT_MAX];
        let len = fill(&mut bytes)?;
        Ok(Fallback {
            len: len as u8,
            bytes,
        })
    }

    fn get(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// What a dict's list holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ListOf {
    Keys,
    Values,
    Items,
}

/// How a method binds: its call, its parameters, and the action (from the bound arguments).
pub(super) struct Method {
    pub(super) call: ObjCall,
    pub(super) params: &'static [&'static str],
    /// How many leading parameters must be given.
    pub(super) required: usize,
    pub(super) action: Build,
}

/// How the action is built from the bound arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Build {
    /// No arguments needed.
    Fixed(Action<'static>),
    /// `Event.wait(timeout)`, `Barrier.wait(timeout)`.
    Wait,
    /// `acquire(blocking, timeout)`.
    Acquire,
    /// A value's `set(value)`.
    Put,
    /// `compare_and_set(expected, value)`.
    CompareAndSet,
    /// A key: `Lookup`, `Remove` …
    Key(KeyAction),
    /// A key and an optional default: a dict's `get` and `pop`.
    KeyOr(KeyAction),
    /// `__setitem__(key, value)`.
    Insert,
    /// `wait_for_key(key, timeout)`.
    WaitKey,
    /// A condition's `notify(n=1)`.
    Notify,
    /// A list action on an index (`None`: the last).
    Index(IndexAction),
    /// A list action on a value.
    Value(ValueAction),
    /// A list action on an index and a value.
    IndexValue(IndexAction),
    /// A registered call's request (`None` when not given).
    Request,
    /// `__getattribute__(name)`: a barrier's `parties`, `n_waiting` or `broken`, as
    /// `BarrierProxy` reads them.
    Attribute,
}

/// The list actions that take an index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum IndexAction {
    At,
    Pop,
    Replace,
    Insert,
}

/// The list actions that take a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ValueAction {
    Append,
    Find,
    CountOf,
    Remove,
}

/// The dict actions that take only a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum KeyAction {
    Lookup,
    Remove,
}

/// The method `name` of a proxy of `kind`.
pub(super) fn method(kind: ObjectKind, name: &str) -> Option<Method> {
    use Build::*;
    let m = |call, params, required, action| Method {
        call,
        params,
        required,
        action,
    };
    let locks = matches!(
        kind,
        ObjectKind::Lock
            | ObjectKind::RLock
            | ObjectKind::Semaphore
            | ObjectKind::BoundedSemaphore
            | ObjectKind::Condition
    );
    Some(match (kind, name) {
        (ObjectKind::Event, "set") => m(ObjCall::Done, &[], 0, Fixed(Action::Set)),
        (ObjectKind::Event, "clear") => m(ObjCall::Done, &[], 0, Fixed(Action::Clear)),
        (ObjectKind::Event, "is_set") => m(ObjCall::Flag, &[], 0, Fixed(Action::IsSet)),
        (ObjectKind::Event, "wait") => m(ObjCall::Flag, &["timeout"], 0, Wait),
        (_, "acquire") if locks => m(ObjCall::Flag, &["blocking", "timeout"], 0, Acquire),
        (_, "__enter__") if locks => m(
            ObjCall::Flag,
            &[],
            0,
            Fixed(Action::Acquire {
                wait: crate::wire::Wait::Forever,
            }),
        ),
        (_, "release") if locks => m(ObjCall::Done, &[], 0, Fixed(Action::Release)),
        // The exception, if any, is not ours to handle: release and let it propagate.
        (_, "__exit__") if locks => m(
            ObjCall::Done,
            &["exc_type", "exc", "tb"],
            0,
            Fixed(Action::Release),
        ),
        (ObjectKind::Lock | ObjectKind::RLock, "locked") => {
            m(ObjCall::Locked, &[], 0, Fixed(Action::Count))
        }
        (_, "get_value") if locks => m(ObjCall::Int, &[], 0, Fixed(Action::Count)),
        (ObjectKind::Value, "get") => m(ObjCall::Value, &[], 0, Fixed(Action::Get)),
        (ObjectKind::Value, "set") => m(ObjCall::Done, &["value"], 1, Put),
        (ObjectKind::Value, "compare_and_set") => {
            m(ObjCall::Flag, &["expected", "value"], 2, CompareAndSet)
        }
        (ObjectKind::Barrier, "wait") => m(ObjCall::BarrierWait, &["timeout"], 0, Wait),
        (ObjectKind::Barrier, "abort") => m(ObjCall::Done, &[], 0, Fixed(Action::Abort)),
        (ObjectKind::Barrier, "reset") => m(ObjCall::Done, &[], 0, Fixed(Action::Reset)),
        (ObjectKind::Barrier, "n_waiting") => m(ObjCall::Int, &[], 0, Fixed(Action::Count)),
        (ObjectKind::Barrier, "__getattribute__") => m(ObjCall::Int, &["name"], 1, Attribute),
        (ObjectKind::Dict, "__getitem__") => m(ObjCall::Item, &["key"], 1, Key(KeyAction::Lookup)),
        (ObjectKind::Dict, "get") => m(
            ObjCall::ItemOr(Fallback::NONE),
            &["key", "default"],
            1,
            KeyOr(KeyAction::Lookup),
        ),
        (ObjectKind::Dict, "__contains__") => {
            m(ObjCall::Contains, &["key"], 1, Key(KeyAction::Lookup))
        }
        (ObjectKind::Dict, "pop") => m(
            ObjCall::Item,
            &["key", "default"],
            1,
            KeyOr(KeyAction::Remove),
        ),
        (ObjectKind::Dict, "__delitem__") => {
            m(ObjCall::Delete, &["key"], 1, Key(KeyAction::Remove))
        }
        // `NamespaceProxy`: attributes are the dict's entries (not listed in `exposed`, as
        // `AutoProxy` would define them on itself).
        (ObjectKind::Dict, "__getattribute__") => {
            m(ObjCall::Attr, &["name"], 1, Key(KeyAction::Lookup))
        }
        (ObjectKind::Dict, "__setattr__") => m(ObjCall::Done, &["name", "value"], 2, Insert),
        (ObjectKind::Dict, "__delattr__") => {
            m(ObjCall::DelAttr, &["name"], 1, Key(KeyAction::Remove))
        }
        (ObjectKind::Dict, "__setitem__") => m(ObjCall::Done, &["key", "value"], 2, Insert),
        (ObjectKind::Dict, "__len__") => m(ObjCall::Int, &[], 0, Fixed(Action::Count)),
        (ObjectKind::Dict, "keys" | "values" | "items") => {
            let of = match name {
                "keys" => ListOf::Keys,
                "values" => ListOf::Values,
                _ => ListOf::Items,
            };
            m(ObjCall::List(of), &[], 0, Fixed(Action::Entries))
        }
        (ObjectKind::Call, "__call__" | "call") => m(ObjCall::Value, &["request"], 0, Request),
        (ObjectKind::Condition, "wait") => m(ObjCall::Flag, &["timeout"], 0, Wait),
        (ObjectKind::Condition, "notify") => m(ObjCall::Done, &["n"], 0, Notify),
        (ObjectKind::Condition, "notify_all") => {
            m(ObjCall::Done, &[], 0, Fixed(Action::Notify { n: u32::MAX }))
        }
        (ObjectKind::List, "__getitem__") => {
            m(ObjCall::AtIndex, &["index"], 1, Index(IndexAction::At))
        }
        (ObjectKind::List, "pop") => m(ObjCall::AtIndex, &["index"], 0, Index(IndexAction::Pop)),
        (ObjectKind::List, "__delitem__") => {
            m(ObjCall::IndexDone, &["index"], 1, Index(IndexAction::Pop))
        }
        (ObjectKind::List, "__setitem__") => m(
            ObjCall::IndexDone,
            &["index", "value"],
            2,
            IndexValue(IndexAction::Replace),
        ),
        (ObjectKind::List, "insert") => m(
            ObjCall::Done,
            &["index", "value"],
            2,
            IndexValue(IndexAction::Insert),
        ),
        (ObjectKind::List, "__len__") => m(ObjCall::Int, &[], 0, Fixed(Action::Count)),
        (ObjectKind::List, "append") => m(ObjCall::Done, &["value"], 1, Value(ValueAction::Append)),
        (ObjectKind::List, "index") => {
            m(ObjCall::Position, &["value"], 1, Value(ValueAction::Find))
        }
        (ObjectKind::List, "__contains__") => {
            m(ObjCall::Contains, &["value"], 1, Value(ValueAction::Find))
        }
        (ObjectKind::List, "count") => m(ObjCall::Int, &["value"], 1, Value(ValueAction::CountOf)),
        (ObjectKind::List, "remove") => {
            m(ObjCall::Removed, &["value"], 1, Value(ValueAction::Remove))
        }
        (ObjectKind::List, "reverse") => m(ObjCall::Done, &[], 0, Fixed(Action::Reverse)),
        (ObjectKind::Dict, "wait_for_key") => m(ObjCall::Value, &["key", "timeout"], 1, WaitKey),
        _ => return None,
    })
}

/// What Python gets for `reply` to `call`.
pub(super) fn answer<'a>(call: &'a ObjCall, reply: &Reply<'a>) -> Out<'a> {
    match (call, *reply) {
        (ObjCall::Done, Reply::Done) => Out::None,
        (ObjCall::Flag, Reply::Flag(b)) => Out::Bool(b),
        (ObjCall::Flag, Reply::Error(ErrorCode::Timeout)) => Out::Bool(false),
        (ObjCall::Locked, Reply::Count(n)) => Out::Bool(n == 0),
        (ObjCall::Int | ObjCall::BarrierWait, Reply::Count(n)) => Out::Int(n.into()),
        (ObjCall::Value | ObjCall::Item | ObjCall::ItemOr(_) | ObjCall::Attr, Reply::Value(v)) => {
            Out::Item(v)
        }
        (ObjCall::DelAttr, Reply::Value(_)) => Out::None,
        (ObjCall::Attr | ObjCall::DelAttr, Reply::Error(ErrorCode::NoSuchKey)) => {
            Out::Error("builtins", "AttributeError", None)
        }
        (ObjCall::Contains, Reply::Value(_) | Reply::Count(_)) => Out::Bool(true),
        (ObjCall::AtIndex, Reply::Value(v)) => Out::Item(v),
        (ObjCall::IndexDone | ObjCall::Removed, Reply::Done | Reply::Value(_)) => Out::None,
        (ObjCall::Position, Reply::Count(n)) => Out::Int(n.into()),
        (ObjCall::AtIndex | ObjCall::IndexDone, Reply::Error(ErrorCode::NoSuchKey)) => {
            Out::Error("builtins", "IndexError", Some("list index out of range"))
        }
        (ObjCall::Position | ObjCall::Removed, Reply::Error(ErrorCode::NoSuchKey)) => {
            Out::Error("builtins", "ValueError", Some("value is not in list"))
        }
        (ObjCall::List(of), Reply::Values(entries)) => Out::List(entries.0, *of),
        (ObjCall::Contains, Reply::Error(ErrorCode::NoSuchKey)) => Out::Bool(false),
        (ObjCall::Delete, Reply::Value(_)) => Out::None,
        (ObjCall::ItemOr(default), Reply::Error(ErrorCode::NoSuchKey)) => Out::Item(default.get()),
        (ObjCall::Item | ObjCall::Delete, Reply::Error(ErrorCode::NoSuchKey)) => {
            Out::Error("builtins", "KeyError", None)
        }
        (ObjCall::BarrierWait, Reply::Error(ErrorCode::Broken | ErrorCode::Timeout)) => {
            Out::Error("threading", "BrokenBarrierError", None)
        }
        // The handler's error, as its text.
        (ObjCall::Value, Reply::Failed(text)) => Out::Error("builtins", "RuntimeError", Some(text)),
        (ObjCall::Value, Reply::Error(ErrorCode::Timeout)) => {
            Out::Error("builtins", "TimeoutError", None)
        }
        (_, Reply::Error(ErrorCode::NotOwner)) => {
            Out::Error("builtins", "RuntimeError", Some("release unlocked lock"))
        }
        (_, Reply::Error(ErrorCode::Overflow)) => Out::Error(
            "builtins",
            "ValueError",
            Some("Semaphore released too many times"),
        ),
        (_, Reply::Error(ErrorCode::Full)) => {
            Out::Error("builtins", "MemoryError", Some("the dict or list is full"))
        }
        (_, Reply::Error(code)) => Out::Error("builtins", "RuntimeError", Some(code.description())),
        _ => Out::Traceback("RuntimeError", "unexpected reply from the manager"),
    }
}

/// Python's `acquire(blocking, timeout)` as a wait: not blocking is `NoWait`; a timeout of
/// `None` or below zero (a `Lock`'s default, -1) waits for ever.
pub(super) fn acquire_wait(blocking: bool, timeout: Option<f64>) -> Wait {
    match (blocking, timeout) {
        (false, _) => Wait::NoWait,
        (true, Some(t)) if t >= 0.0 => millis(t),
        (true, _) => Wait::Forever,
    }
}

/// Seconds as a wait, rounded up (never return before the time asked for).
pub(super) fn millis(secs: f64) -> Wait {
    let ms = secs * 1000.0;
    if ms.is_nan() || ms >= u32::MAX as f64 {
        return Wait::Forever;
    }
    let whole = ms as u32;
    Wait::Millis(if (whole as f64) < ms {
        whole + 1
    } else {
        whole
    })
}
