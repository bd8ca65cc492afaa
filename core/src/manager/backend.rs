//! Queues kept by an engine outside the manager (a *backend*, such as NATS JetStream), so that
//! several managers can serve the same queues as stateless gateways.
//!
//! The core still does no I/O. A manager given a [`Backend`] (see [`Manager::set_backend`])
//! checks every request as always (frames, keys, rights, limits), then hands the queue
//! operations (`Put`, `PutMany`, `Get`, `GetMany`, `GetLeased`, `Ack`, `Nack`) to the backend as
//! [`BackendRequest`]s, each with a [`BackendToken`], and reserves room for the reply. The
//! transport carries them to the engine and, when the engine answers, calls
//! [`Manager::complete_backend`] with the outcome; the manager encodes the reply to the
//! connection and request that asked. A request whose caller went away (cancelled, closed) is
//! withdrawn with [`BackendRequest::Cancel`]; an outcome that still arrives for it is
//! [`Completion::Released`], and the transport gives its items back to the engine, so an item
//! fetched for a departed caller is never dropped. Items of replies that never left a closed
//! connection come back as [`BackendRequest::Return`].
//!
//! Under a backend every queue's contents live in the engine: the manager's own queue storage
//! stays empty, and blocking waits are the engine's (a fetch that waits up to the request's
//! time). Leases are the engine's too: the backend numbers them, and a connection's leases are
//! given back when it closes ([`BackendRequest::Closed`]).

use alloc::boxed::Box;
use alloc::vec::Vec;

use super::{Manager, State, Step, Take};
use crate::time::Instant;
use crate::wire::{
    ErrorCode, Handle, Items, ObjectKind, ObjectStat, Op, QueueSize, QueueSpec, Reply, Wait,
    SMALL_REPLY_BOUND,
};
use crate::ConnId;

/// Names one request handed to a backend, for [`Manager::complete_backend`]. A token is never
/// reused while the manager runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BackendToken(pub u64);

impl BackendToken {
    fn new(slot: u32, generation: u32) -> Self {
        BackendToken(u64::from(generation) << 32 | u64::from(slot))
    }
    fn slot(self) -> usize {
        (self.0 & 0xFFFF_FFFF) as usize
    }
    fn generation(self) -> u32 {
        (self.0 >> 32) as u32
    }
}

/// A queue operation for the backend. Borrowed data lives only for the call: copy what is kept.
// The fields are what each variant's doc names: the token to complete, the asking connection,
// the queue's handle and name.
#[allow(missing_docs)]
#[derive(Debug, Clone, Copy)]
pub enum BackendRequest<'r> {
    /// Append `item` to queue `name`. Outcome: `Done`, or `Error` (`Full` when the queue is at
    /// its capacity).
    Put {
        token: BackendToken,
        conn: ConnId,
        handle: Handle,
        name: &'r str,
        item: &'r [u8],
    },
    /// Append the packed `items`, in order. Outcome: `Accepted`.
    PutMany {
        token: BackendToken,
        conn: ConnId,
        handle: Handle,
        name: &'r str,
        items: Items<'r>,
    },
    /// Take up to `max_items` items whose packed bytes total at most `max_bytes` (the first
    /// item alone may be up to `max_bytes`), waiting as `wait` says. With `lease_ms` the items
    /// are held under a lease of the backend (outcome `Leased`), else taken for good (outcome
    /// `Items`; a `Get` takes at most one). Nothing to take in time: `Error(Empty)` for
    /// `NoWait`, else `Error(Timeout)`.
    Get {
        token: BackendToken,
        conn: ConnId,
        handle: Handle,
        name: &'r str,
        max_items: u32,
        max_bytes: u32,
        wait: Wait,
        lease_ms: Option<u32>,
    },
    /// Acknowledge lease `lease` of connection `conn`. Outcome: `Done` or `Error(NoSuchLease)`.
    Ack {
        token: BackendToken,
        conn: ConnId,
        lease: u64,
    },
    /// Give lease `lease`'s items back for redelivery. Outcome: `Done` or `Error(NoSuchLease)`.
    Nack {
        token: BackendToken,
        conn: ConnId,
        lease: u64,
    },
    /// Put `item` back in queue `name`: it left the engine but never reached its client. No
    /// outcome.
    Return {
        handle: Handle,
        name: &'r str,
        item: &'r [u8],
    },
    /// The caller of request `token` went away: stop waiting for it. An outcome may still
    /// arrive; completing it gives [`Completion::Released`].
    Cancel { token: BackendToken },
    /// Connection `conn` closed: give back every lease it holds. No outcome.
    Closed { conn: ConnId },
    /// A client created queue `name`. No outcome.
    Created {
        handle: Handle,
        name: &'r str,
        spec: QueueSpec,
    },
}

/// How the engine answered a [`BackendRequest`].
#[allow(missing_docs)]
#[derive(Debug, Clone, Copy)]
pub enum BackendOutcome<'o> {
    /// A put, ack or nack succeeded.
    Done,
    /// How many items of a `PutMany` went in, and what stopped the rest.
    Accepted {
        count: u32,
        error: Option<ErrorCode>,
    },
    /// The items a plain get took (packed, at least one).
    Items(Items<'o>),
    /// The items a leased get took, the lease's id, and each item's delivery count.
    Leased {
        lease: u64,
        deliveries: &'o [u8],
        items: Items<'o>,
    },
    /// The operation failed.
    Error(ErrorCode),
}

/// What became of an outcome given to [`Manager::complete_backend`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    /// Its reply is queued for the caller: a plain get's items may be removed for good.
    Delivered,
    /// Nobody waits for it any more (or it did not fit the reply): give its items back.
    Released,
}

/// Hears the queue operations of a manager with a backend (see the module docs). Calls must
/// not block: a transport queues them for the engine.
pub trait Backend: Send {
    /// One operation; outcomes come back through [`Manager::complete_backend`].
    fn request(&mut self, request: BackendRequest<'_>);

    /// Queue `name`'s length as the engine last reported it, for `Stat` and `Size` (which
    /// answer 0 without it). Must not block: an engine asks on its own time and keeps the
    /// answer.
    fn len(&self, name: &str) -> Option<u32> {
        let _ = name;
        None
    }

    /// How the engine's connection fares, for `BackendStatus`. Must not block. A backend that
    /// does not say is reported connected, with no details.
    fn health(&self) -> Health {
        Health {
            connected: true,
            ..Health::default()
        }
    }

    /// The transport's turn is over (see [`Manager::flush_backend`]): send what
    /// [`Backend::request`] held back to combine with a later request of the same turn.
    fn flush(&mut self) {}
}

/// How a backend's connection fares (see [`Backend::health`]). Texts longer than the wire
/// allows ([`crate::wire::BackendHealth`]) are cut.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Health {
    /// The engine, such as `nats`.
    pub kind: alloc::string::String,
    /// The server it is (or was last) connected to.
    pub server: alloc::string::String,
    /// Whether it is connected now.
    pub connected: bool,
    /// Milliseconds since it last connected or lost its connection.
    pub since_ms: u64,
    /// Connections it lost since it started (each followed by attempts to connect again).
    pub reconnects: u32,
    /// The last error it met, or empty.
    pub last_error: alloc::string::String,
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn clip(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Put,
    PutMany,
    GetOne,
    GetMany,
    Leased,
    Lease,
}

#[derive(Clone, Copy)]
struct Pending {
    generation: u32,
    live: bool,
    conn: u32,
    request: u32,
    handle: Handle,
    reserve: u32,
    /// The most bytes of packed items (and delivery counts) its reply can carry.
    room: u32,
    kind: Kind,
}

/// A manager's backend and the requests it has not answered yet.
pub(super) struct BackendSide {
    engine: Box<dyn Backend>,
    pending: Vec<Pending>,
    free: Vec<u32>,
    limit: usize,
}

impl<'a> Manager<'a> {
    /// `stat` with a queue's length as its backend last reported it.
    pub(super) fn backend_stat<'s>(&self, stat: Option<ObjectStat<'s>>) -> Option<ObjectStat<'s>> {
        let mut stat = stat?;
        if let Some(side) = &self.backend {
            if stat.info.kind == ObjectKind::Queue {
                stat.len = side.engine.len(stat.name).unwrap_or(stat.len);
            }
        }
        Some(stat)
    }

    /// `size` with the queue's length as its backend last reported it.
    pub(super) fn backend_size(&self, name: &str, mut size: QueueSize) -> QueueSize {
        if let Some(len) = self.backend.as_ref().and_then(|s| s.engine.len(name)) {
            size.len = len;
            size.full = len >= size.capacity;
        }
        size
    }

    /// Keeps every queue's contents in `backend` from now on, with at most `max_pending`
    /// requests awaiting its answer at once (more are answered `WaiterLimit`). Set before
    /// serving; the manager's own queues should be empty.
    pub fn set_backend(&mut self, backend: Box<dyn Backend>, max_pending: usize) {
        self.backend = Some(BackendSide {
            engine: backend,
            pending: Vec::new(),
            free: Vec::new(),
            limit: max_pending.max(1),
        });
    }

    /// Answers connection `i`'s `BackendStatus` request `id`.
    pub(super) fn backend_status(&mut self, i: usize, id: u32) {
        use crate::wire::{BackendHealth, MAX_BACKEND_ERROR, MAX_BACKEND_KIND, MAX_BACKEND_SERVER};
        let health = self.backend.as_ref().map(|b| b.engine.health());
        let reply = Reply::Backend(health.as_ref().map(|h| BackendHealth {
            kind: clip(&h.kind, MAX_BACKEND_KIND),
            server: clip(&h.server, MAX_BACKEND_SERVER),
            connected: h.connected,
            since_ms: h.since_ms,
            reconnects: h.reconnects,
            last_error: clip(&h.last_error, MAX_BACKEND_ERROR),
        }));
        self.reply(i, id, &reply);
    }

    /// Tells the backend that this turn's requests have all been handed over (see
    /// [`Backend::flush`]). A transport calls it once per turn of its loop, before it sleeps.
    pub fn flush_backend(&mut self) {
        if let Some(b) = &mut self.backend {
            b.engine.flush();
        }
    }

    /// Whether a backend keeps the queues.
    pub fn has_backend(&self) -> bool {
        self.backend.is_some()
    }

    /// Requests handed to the backend and not answered yet.
    pub fn backend_pending(&self) -> usize {
        self.backend
            .as_ref()
            .map_or(0, |b| b.pending.len() - b.free.len())
    }

    /// Answers request `token` with the engine's `outcome`. See [`Completion`] for what the
    /// transport does with the items then.
    pub fn complete_backend(
        &mut self,
        token: BackendToken,
        outcome: BackendOutcome<'_>,
        now: Instant,
    ) -> Completion {
        self.now = now;
        let Some(b) = self.backend.as_mut() else {
            return Completion::Released;
        };
        let slot = token.slot();
        let Some(p) = b.pending.get(slot).copied() else {
            return Completion::Released;
        };
        if !p.live || p.generation != token.generation() {
            return Completion::Released;
        }
        b.pending[slot].live = false;
        b.free.push(slot as u32);
        let i = p.conn as usize;
        let c = &mut self.conns[i];
        c.reserved -= p.reserve as usize;
        if !matches!(c.state, State::Open(_)) {
            return Completion::Released;
        }
        let fits = |body: usize| body <= p.room as usize;
        let mut result = Completion::Delivered;
        let reply = match (p.kind, outcome) {
            (_, BackendOutcome::Error(code)) => match p.kind {
                Kind::PutMany => Reply::Accepted {
                    count: 0,
                    error: Some(code),
                },
                _ => Reply::Error(code),
            },
            (Kind::Put | Kind::Lease, BackendOutcome::Done) => Reply::Done,
            (Kind::PutMany, BackendOutcome::Accepted { count, error }) => {
                Reply::Accepted { count, error }
            }
            (Kind::GetOne, BackendOutcome::Items(items)) => {
                let mut it = items.iter();
                match (it.next(), it.next()) {
                    (Some(item), None) if fits(item.len()) => Reply::Item {
                        handle: p.handle,
                        item,
                    },
                    _ => {
                        result = Completion::Released;
                        Reply::Error(ErrorCode::TooLarge)
                    }
                }
            }
            (Kind::GetMany, BackendOutcome::Items(items))
                if items.check().is_some_and(|n| n > 0) && fits(items.0.len()) =>
            {
                Reply::Items {
                    handle: p.handle,
                    items,
                }
            }
            (
                Kind::Leased,
                BackendOutcome::Leased {
                    lease,
                    deliveries,
                    items,
                },
            ) if items.check() == Some(deliveries.len() as u32)
                && !deliveries.is_empty()
                && fits(items.0.len() + deliveries.len()) =>
            {
                Reply::Leased {
                    handle: p.handle,
                    lease,
                    deliveries,
                    items,
                }
            }
            // An engine that answers out of turn: the items go back, the caller learns why.
            _ => {
                result = Completion::Released;
                Reply::Error(ErrorCode::TooLarge)
            }
        };
        self.reply(i, p.request, &reply);
        // Room came back: input that waited for it can go on.
        self.link(super::List::Resume, i);
        self.run_resumes(now);
        result
    }

    /// Hands a queue operation of connection `i` to the backend: `None` when there is no
    /// backend or `op` is not one for it.
    pub(super) fn backend_request(&mut self, i: usize, id: u32, op: &Op) -> Option<Step> {
        self.backend.as_ref()?;
        let (handle, kind, take) = match *op {
            Op::Put { handle, .. } => (handle, Kind::Put, None),
            Op::PutMany { handle, .. } => (handle, Kind::PutMany, None),
            Op::Get { handle, .. } => (handle, Kind::GetOne, Some(Take::One)),
            Op::GetMany {
                handle,
                max_items,
                max_bytes,
                ..
            } => (
                handle,
                Kind::GetMany,
                Some(Take::many(max_items, max_bytes)),
            ),
            Op::GetLeased {
                handle,
                max_items,
                max_bytes,
                lease_ms,
                ..
            } => (
                handle,
                Kind::Leased,
                Some(Take::leased(max_items, max_bytes, lease_ms)),
            ),
            Op::Ack { .. } | Op::Nack { .. } => (Handle(0), Kind::Lease, None),
            // Numbered puts keep their exactly-once record in this manager's memory, which a
            // gateway does not have: refused rather than half kept.
            Op::PutSeq { .. } | Op::PutManySeq { .. } => {
                self.reply_error(i, id, ErrorCode::NotAllowed);
                return Some(Step::Done);
            }
            _ => return None,
        };
        if kind != Kind::Lease {
            let q = match self.registry.queue(handle) {
                Ok(q) => q,
                Err(e) => {
                    self.reply_error(i, id, e);
                    return Some(Step::Done);
                }
            };
            let spec = q.queue.spec();
            let refuse = match *op {
                _ if self.shutting_down => Some(ErrorCode::ShuttingDown),
                Op::Put { item, .. } if item.len() > spec.max_item as usize => {
                    Some(ErrorCode::TooLarge)
                }
                Op::Put { item, .. } if !super::fits_mode(spec, item) => {
                    Some(ErrorCode::InvalidValue)
                }
                Op::PutMany { items, .. } => match items.check() {
                    None => {
                        self.begin_close(i, crate::wire::CloseReason::Malformed);
                        return Some(Step::Done);
                    }
                    Some(_) if items.iter().any(|x| x.len() > spec.max_item as usize) => {
                        Some(ErrorCode::TooLarge)
                    }
                    Some(_) if items.iter().any(|x| !super::fits_mode(spec, x)) => {
                        Some(ErrorCode::InvalidValue)
                    }
                    Some(_) => None,
                },
                _ => None,
            };
            if let Some(code) = refuse {
                let reply = match kind {
                    Kind::PutMany => Reply::Accepted {
                        count: 0,
                        error: Some(code),
                    },
                    _ => Reply::Error(code),
                };
                self.reply(i, id, &reply);
                return Some(Step::Done);
            }
        }
        let (reserve, room) = match take {
            Some(take) => {
                let bound = self.get_reply_bound(i, handle, take);
                let frame = match take {
                    Take::Leased { .. } => super::leasing::reply_bound(0),
                    _ => crate::wire::item_reply_bound(0),
                };
                (bound.max(SMALL_REPLY_BOUND), bound.saturating_sub(frame))
            }
            None => (SMALL_REPLY_BOUND, 0),
        };
        let c = &self.conns[i];
        if c.tx.free() < c.reserved + reserve {
            if c.reserved > 0 {
                return Some(Step::Paused);
            }
            self.reply_error(i, id, ErrorCode::TooLarge);
            return Some(Step::Done);
        }
        let b = self.backend.as_mut()?;
        let waiting = take.is_some() && !matches!(op_wait(op), Some(Wait::NoWait));
        let mine = b
            .pending
            .iter()
            .filter(|p| p.live && p.conn == i as u32 && is_get(p.kind))
            .count();
        let full = b.pending.len() - b.free.len() >= b.limit
            || (waiting && mine >= self.config.max_waiters_per_connection as usize);
        if full {
            let reply = match kind {
                Kind::PutMany => Reply::Accepted {
                    count: 0,
                    error: Some(ErrorCode::WaiterLimit),
                },
                _ => Reply::Error(ErrorCode::WaiterLimit),
            };
            self.reply(i, id, &reply);
            return Some(Step::Done);
        }
        let slot = match b.free.pop() {
            Some(s) => s as usize,
            None => {
                b.pending.push(Pending {
                    generation: 0,
                    live: false,
                    conn: 0,
                    request: 0,
                    handle,
                    reserve: 0,
                    room: 0,
                    kind,
                });
                b.pending.len() - 1
            }
        };
        let p = &mut b.pending[slot];
        p.generation = p.generation.wrapping_add(1);
        *p = Pending {
            generation: p.generation,
            live: true,
            conn: i as u32,
            request: id,
            handle,
            reserve: reserve as u32,
            room: room as u32,
            kind,
        };
        let token = BackendToken::new(slot as u32, p.generation);
        self.conns[i].reserved += reserve;
        let name = self.registry.name(handle).unwrap_or("");
        let conn = ConnId(i as u32);
        let request = match *op {
            Op::Put { item, .. } => BackendRequest::Put {
                token,
                conn,
                handle,
                name,
                item,
            },
            Op::PutMany { items, .. } => BackendRequest::PutMany {
                token,
                conn,
                handle,
                name,
                items,
            },
            Op::Ack { lease } => BackendRequest::Ack { token, conn, lease },
            Op::Nack { lease } => BackendRequest::Nack { token, conn, lease },
            _ => {
                let (max_items, max_bytes, lease_ms) = match take {
                    Some(Take::Many {
                        max_items,
                        max_bytes,
                    }) => (max_items, max_bytes, None),
                    Some(Take::Leased {
                        max_items,
                        max_bytes,
                        lease_ms,
                    }) => (max_items, max_bytes, Some(lease_ms)),
                    _ => (1, u32::MAX, None),
                };
                // The engine fills no more than the reply's reservation holds (a leased
                // reply's room counts a byte per item for its delivery count).
                let room = match lease_ms {
                    Some(_) => room.saturating_sub(max_items as usize),
                    None => room,
                };
                BackendRequest::Get {
                    token,
                    conn,
                    handle,
                    name,
                    max_items,
                    max_bytes: max_bytes.min(room as u32),
                    wait: op_wait(op).unwrap_or(Wait::NoWait),
                    lease_ms,
                }
            }
        };
        b.engine.request(request);
        Some(Step::Done)
    }

    /// Withdraws connection `i`'s request `target` if the backend holds it: `true` if it did.
    pub(super) fn backend_cancel(&mut self, i: usize, target: u32) -> bool {
        let Some(b) = self.backend.as_mut() else {
            return false;
        };
        let found = b
            .pending
            .iter()
            .position(|p| p.live && p.conn == i as u32 && p.request == target && is_get(p.kind));
        let Some(slot) = found else {
            return false;
        };
        let token = withdraw(b, slot);
        b.engine.request(BackendRequest::Cancel { token });
        let reserve = b.pending[slot].reserve as usize;
        self.conns[i].reserved -= reserve;
        self.reply_error(i, target, ErrorCode::Cancelled);
        true
    }

    /// Withdraws every request of connection `i` (it is closing) without answering.
    pub(super) fn backend_drop_conn(&mut self, i: usize) {
        let Some(b) = self.backend.as_mut() else {
            return;
        };
        for slot in 0..b.pending.len() {
            let p = b.pending[slot];
            if p.live && p.conn == i as u32 {
                let token = withdraw(b, slot);
                b.engine.request(BackendRequest::Cancel { token });
                self.conns[i].reserved -= p.reserve as usize;
            }
        }
    }

    /// Connection `i` closed: its leases go back.
    pub(super) fn backend_closed(&mut self, i: usize) {
        if let Some(b) = self.backend.as_mut() {
            b.engine.request(BackendRequest::Closed {
                conn: ConnId(i as u32),
            });
        }
    }

    /// Hands an item that never reached its client back to the backend: `None` without one.
    pub(super) fn backend_return(&mut self, handle: Handle, item: &[u8]) -> Option<Reply<'static>> {
        let b = self.backend.as_mut()?;
        let Some(name) = self.registry.name(handle) else {
            return Some(Reply::Error(ErrorCode::NoSuchObject));
        };
        b.engine
            .request(BackendRequest::Return { handle, name, item });
        Some(Reply::Done)
    }

    /// Tells the backend about a queue a client created.
    pub(super) fn backend_created(&mut self, handle: Handle, name: &str, spec: QueueSpec) {
        if let Some(b) = self.backend.as_mut() {
            b.engine
                .request(BackendRequest::Created { handle, name, spec });
        }
    }
}

fn is_get(kind: Kind) -> bool {
    matches!(kind, Kind::GetOne | Kind::GetMany | Kind::Leased)
}

fn op_wait(op: &Op) -> Option<Wait> {
    match *op {
        Op::Get { wait, .. } | Op::GetMany { wait, .. } | Op::GetLeased { wait, .. } => Some(wait),
        _ => None,
    }
}

/// Frees pending slot `slot`; the token it had.
fn withdraw(b: &mut BackendSide, slot: usize) -> BackendToken {
    let p = &mut b.pending[slot];
    p.live = false;
    b.free.push(slot as u32);
    BackendToken::new(slot as u32, p.generation)
}
