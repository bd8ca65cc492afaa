//! depot queues in NATS JetStream: one work-queue stream per queue, one durable pull consumer
//! shared by every gateway.
//!
//! - put: a publish to the queue's subject; the depot client is answered once JetStream's
//!   PubAck arrives (`maximum messages exceeded` → `Full`: the stream discards new messages at
//!   the queue's capacity). A batch put publishes every item at once and counts the PubAcks
//!   in order: its count is that of the leading items stored.
//! - get: a pull request (`$JS.API.CONSUMER.MSG.NEXT`) for one message that waits up to the
//!   get's time (`expires`). A batch get asks for up to all it may take (`batch`,
//!   `max_bytes`) with `no_wait` and `expires`: JetStream waits for the first message, then
//!   ends the request with what is there. If that is refused, it waits for one item, then
//!   takes what else is there. A plain get acks its items once the reply is queued to the
//!   client; a leased get keeps their ack subjects under a lease id until the client acks
//!   (`+ACK`) or nacks (`-NAK`), or its connection closes (`-NAK`); JetStream redelivers what
//!   a lost gateway never acked after the consumer's `ack_wait`. A one-item ack waits for the
//!   end of the manager's turn: when the same queue's next pull request comes in that turn
//!   (a consumer's ack and next get usually arrive together), one message does both
//!   (`+NXT` with the pull request's body).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use depot_core::wire::{Items, QueueSpec, Wait};
use depot_core::ConnId;
use depot_std::backend::{
    Backend, BackendDone, BackendLink, BackendRequest, BackendToken, Completion, Outcome,
};
use depot_std::ErrorCode;
use serde_json::{json, Value};

use crate::conn::{Auth, Conn, Handler, Msg, Options};

/// The name of the durable consumer every gateway shares.
const CONSUMER: &str = "depot";
/// A get that waits forever asks JetStream for this long at a time.
const FOREVER_SLICE: Duration = Duration::from_secs(20);
/// A put not acknowledged by JetStream within this time is answered `Timeout` (its fate is
/// unknown: the client may put it again).
const PUT_TIMEOUT: Duration = Duration::from_secs(5);
/// A timed get is answered `Timeout` this long after its time if JetStream said nothing.
const GET_GRACE: Duration = Duration::from_secs(3);
/// How long a refused pull request waits before it is asked again.
const RETRY_PULL: Duration = Duration::from_millis(500);
/// How long set-up requests to the JetStream API may take.
const API_TIMEOUT: Duration = Duration::from_secs(10);
/// How often each queue's length is asked of JetStream (for `stat`, `size` and metrics).
const LENGTHS_EVERY: Duration = Duration::from_secs(1);
/// How long a read-ahead item waits for a get by default (see `JetStreamOptions::read_ahead`).
pub const READ_AHEAD: Duration = Duration::from_millis(250);
/// The body of a pull request for one item, without waiting.
const ONE_NOW: &str = "{\"batch\":1,\"no_wait\":true}";
/// How often deadlines are looked at (`Shared::tick`).
const TICK: Duration = Duration::from_millis(250);

/// How depot uses JetStream.
#[derive(Debug, Clone)]
pub struct JetStreamOptions {
    /// `host:port` of each NATS server.
    pub servers: Vec<String>,
    /// Credentials for the NATS servers.
    pub auth: Auth,
    /// TLS to the NATS servers.
    pub tls: Option<crate::TlsConfig>,
    /// Copies of each stream in a JetStream cluster (1 for a single server).
    pub replicas: u32,
    /// How long a leased item stays with its holder before JetStream redelivers it.
    pub ack_wait: Duration,
    /// Streams are named `<prefix><queue>` and their subjects `<prefix>.<queue>` (lowercased).
    pub prefix: String,
    /// How long the NATS connection's reader looks for JetStream's answers without sleeping
    /// before it blocks (see [`crate::conn::Options::busy_poll`]; zero: block at once).
    pub busy_poll: Duration,
    /// Whether the manager's event loop reads and writes the NATS connection itself (the
    /// default; Unix, without TLS): JetStream's answers reach depot's clients, and their
    /// requests reach JetStream, with no hand-off to or from the NATS connection's threads
    /// (see [`Conn::read_on_loop`]). Off: a reader thread reads and a writer thread writes.
    pub io_on_loop: bool,
    /// Read-ahead: when a get of one item takes a queue's item, JetStream says more are
    /// waiting and the queue's gets come quickly (the last within a quarter of this time of
    /// the answer before it), the gateway asks for the next one at once, so the queue's next
    /// get is answered without a round trip to JetStream. A read-ahead item no get takes within this time goes back
    /// (`-NAK`: JetStream counts it as a delivery, so its next holder sees one delivery more).
    /// Zero: no read-ahead.
    pub read_ahead: Duration,
}

impl JetStreamOptions {
    /// The defaults for these servers: no credentials, one replica, 30 s `ack_wait`, busy
    /// polling for [`depot_std::DEFAULT_BUSY_POLL`].
    pub fn new(servers: Vec<String>) -> Self {
        JetStreamOptions {
            servers,
            auth: Auth::None,
            tls: None,
            replicas: 1,
            ack_wait: Duration::from_secs(30),
            prefix: "DEPOT_".into(),
            busy_poll: depot_std::DEFAULT_BUSY_POLL,
            io_on_loop: true,
            read_ahead: READ_AHEAD,
        }
    }
}

/// A queue's stream and subjects.
#[derive(Clone)]
struct Stream {
    subject: String,
    next: String,
}

/// What a reply on the inbox is for.
enum Route {
    Put(BackendToken, Instant),
    /// Item `.1` of a batch put.
    PutMany(BackendToken, u32, Instant),
    Api(std::sync::mpsc::Sender<Vec<u8>>),
    /// An item given back; only errors matter.
    Return,
}

/// A batch put: every item is published at once, and the PubAcks are collected.
struct PutMany {
    /// Each item's answer from JetStream, in order (`None` while it has not come): no error,
    /// or why it was not stored.
    answers: Vec<Option<Option<ErrorCode>>>,
    /// Items stored, from the first.
    stored: u32,
}

/// What a fetch's next pull request asks for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pull {
    /// A batch get's first: up to everything it may take, what is there once there is one
    /// (`no_wait` with the get's `expires`).
    Try,
    /// One item, waiting up to the get's time (`expires`).
    Wait,
    /// After the first item: what else is there now (`no_wait`), within the reply's room.
    Rest,
    /// A read-ahead's, which the get took over: one item, `no_wait`.
    Ahead,
}

/// An item JetStream delivered: payload, ack subject, delivery count.
type Taken = (Vec<u8>, String, u8);

/// A queue's next item, asked for ahead of the next get (`JetStreamOptions::read_ahead`).
enum Ahead {
    /// Its pull request (one item, `no_wait`) is out since then, answered on this
    /// subscription.
    Asked {
        sid: u64,
        reply: String,
        since: Instant,
    },
    /// It came, then.
    Held { item: Taken, since: Instant },
}

struct Fetch {
    conn: ConnId,
    stream: Stream,
    want: u32,
    room: usize,
    wait: Wait,
    leased: bool,
    /// Taken so far.
    got: Vec<Taken>,
    bytes: usize,
    /// When JetStream delivered the first of them (their `ack_wait` runs from then).
    since: Option<Instant>,
    /// The subscription its pull requests are answered on, and its subject.
    sid: u64,
    reply: String,
    /// What its pull request asks for.
    pull: Pull,
    /// When a timed get gives up if JetStream said nothing.
    deadline: Option<Instant>,
    /// When to ask again after JetStream refused a pull request (too many waiting, say).
    retry_at: Option<Instant>,
}

struct Lease {
    conn: ConnId,
    /// Its stream's pull-request subject (an ack may ride on the next pull, see `ack`).
    next: String,
    acks: Vec<String>,
    since: Instant,
}

#[derive(Default)]
struct State {
    next_route: u64,
    routes: HashMap<u64, Route>,
    /// Fetches by the subscription their messages come on (JetStream delivers a pulled
    /// message under its own subject, so only the subscription tells whose it is).
    fetch_subs: HashMap<u64, BackendToken>,
    /// Subscriptions with no pull request outstanding, for the next fetches.
    free_subs: Vec<(u64, String)>,
    /// Subscriptions whose pull request may still be outstanding, ended after a while (what
    /// arrives on them meanwhile is given back).
    stale_subs: Vec<(u64, Instant)>,
    /// By queue name.
    streams: HashMap<String, Stream>,
    fetches: HashMap<BackendToken, Fetch>,
    batches: HashMap<BackendToken, PutMany>,
    leases: HashMap<u64, Lease>,
    next_lease: u64,
    /// An ack held back for the manager's turn (its stream's pull-request subject, its ack
    /// subject): a pull request of that stream in the same turn carries it (`+NXT`), else the
    /// turn's end sends it (`flush_held`).
    held_ack: Option<(String, String)>,
    /// Read-ahead items by their stream's pull-request subject, and the subscriptions of
    /// those asked for.
    ahead: HashMap<String, Ahead>,
    ahead_subs: HashMap<u64, String>,
    /// How many fetches wait for each stream (by its pull-request subject).
    fetching: HashMap<String, usize>,
    /// How soon each stream's gets follow one another here (by its pull-request subject).
    pace: HashMap<String, Pace>,
}

/// When a stream's last get here was answered with items, and whether the get after the one
/// before came soon (within a quarter of the read-ahead's hold): then its consumers are worth
/// reading ahead for.
struct Pace {
    done: Instant,
    quick: bool,
}

impl State {
    fn add_fetch(&mut self, token: BackendToken, f: Fetch) {
        self.fetch_subs.insert(f.sid, token);
        *self.fetching.entry(f.stream.next.clone()).or_default() += 1;
        self.fetches.insert(token, f);
    }

    fn remove_fetch(&mut self, token: BackendToken) -> Option<Fetch> {
        let f = self.fetches.remove(&token)?;
        self.fetch_subs.remove(&f.sid);
        if let Some(n) = self.fetching.get_mut(&f.stream.next) {
            *n -= 1;
            if *n == 0 {
                self.fetching.remove(&f.stream.next);
            }
        }
        Some(f)
    }
}

struct Shared {
    /// Set once connected; read without a lock on every publish.
    conn: OnceLock<Arc<Conn>>,
    state: Mutex<State>,
    link: BackendLink,
    opts: JetStreamOptions,
    /// Each queue's length as JetStream last reported it (its stream's `state.messages`).
    lengths: Mutex<HashMap<String, u32>>,
}

impl Shared {
    fn conn(&self) -> Option<&Arc<Conn>> {
        self.conn.get()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn publish(&self, subject: &str, reply: Option<&str>, payload: &[u8]) {
        if let Some(c) = self.conn() {
            c.publish(subject, reply, payload);
        }
    }

    fn reply_subject(&self, route: u64) -> String {
        match self.conn() {
            Some(c) => format!("{}.{route}", c.inbox()),
            None => String::new(),
        }
    }

    fn complete(&self, token: BackendToken, outcome: Outcome) {
        self.link.complete(BackendDone {
            token,
            outcome,
            settle: None,
        });
    }

    /// Sends a pull request for fetch `token`.
    fn pull(self: &Arc<Self>, st: &mut State, token: BackendToken) {
        let State {
            fetches, held_ack, ..
        } = st;
        let Some(f) = fetches.get_mut(&token) else {
            return;
        };
        // Written by hand: one per get, on the hot path.
        // What is left of a timed get's time (a second pull request does not wait it again).
        let expires = match f.wait {
            Wait::NoWait => None,
            Wait::Millis(_) => Some(f.deadline.map_or(0, |d| {
                let left = d.saturating_duration_since(Instant::now());
                left.saturating_sub(GET_GRACE).as_nanos() as u64
            })),
            Wait::Forever => Some(FOREVER_SLICE.as_nanos() as u64),
        }
        .map(|ns| ns.max(1_000_000));
        let body = match (f.pull, expires) {
            // `max_bytes` stops JetStream at the reply's room (it counts a little more than
            // the payload, so it stops early rather than late). `no_wait` with `expires`:
            // waits for the first message, then ends with what is there.
            (Pull::Try, Some(ns)) => format!(
                "{{\"batch\":{},\"max_bytes\":{},\"no_wait\":true,\"expires\":{ns}}}",
                f.want,
                f.room.max(1)
            ),
            (Pull::Try, None) | (Pull::Rest, _) => format!(
                "{{\"batch\":{},\"max_bytes\":{},\"no_wait\":true}}",
                f.want - f.got.len() as u32,
                f.room.saturating_sub(f.bytes).max(1)
            ),
            (Pull::Wait, None) | (Pull::Ahead, _) => ONE_NOW.to_owned(),
            (Pull::Wait, Some(ns)) => format!("{{\"batch\":1,\"expires\":{ns}}}"),
        };
        self.send_pull(held_ack, &f.stream.next, &f.reply, &body);
    }

    /// Sends a pull request to `next`, answered on `reply`; with the `held` ack in the same
    /// message when it is of the same stream.
    fn send_pull(&self, held: &mut Option<(String, String)>, next: &str, reply: &str, body: &str) {
        let Some(c) = self.conn() else {
            return;
        };
        match held.take() {
            // One message acks and asks for more: JetStream's "ack next" (`+NXT` and the pull
            // request's body, answered on the reply subject as a pull request is).
            Some((held_next, ack)) if held_next == next => {
                let mut payload = b"+NXT ".to_vec();
                payload.extend_from_slice(body.as_bytes());
                c.publish(&ack, Some(reply), &payload);
            }
            Some((_, ack)) => c.publish_all([
                (ack.as_str(), None, &b"+ACK"[..]),
                (next, Some(reply), body.as_bytes()),
            ]),
            None => c.publish(next, Some(reply), body.as_bytes()),
        }
    }

    /// A subscription for a pull request's answers: a free one, or a new one.
    fn subscription(&self, st: &mut State) -> Option<(u64, String)> {
        if let Some(sub) = st.free_subs.pop() {
            return Some(sub);
        }
        let c = self.conn()?;
        st.next_route += 1;
        let subject = format!("_FETCH{}.{}", &c.inbox()[6..], st.next_route);
        Some((c.subscribe(&subject), subject))
    }

    /// Asks for `stream`'s next item ahead of its next get (one item, `no_wait`), unless the
    /// read-ahead is off, the stream has one already, or other gets of it wait here (their
    /// pull requests take what comes; one more would mostly find nothing).
    fn read_ahead(&self, st: &mut State, stream: &Stream) {
        if self.opts.read_ahead.is_zero()
            || st.ahead.contains_key(&stream.next)
            || st.fetching.contains_key(&stream.next)
        {
            return;
        }
        let Some((sid, reply)) = self.subscription(st) else {
            return;
        };
        self.send_pull(&mut st.held_ack, &stream.next, &reply, ONE_NOW);
        st.ahead_subs.insert(sid, stream.next.clone());
        st.ahead.insert(
            stream.next.clone(),
            Ahead::Asked {
                sid,
                reply,
                since: Instant::now(),
            },
        );
    }

    /// JetStream answered a read-ahead's pull request (on subscription `sid`).
    fn ahead_answered(&self, st: &mut State, sid: u64, msg: Msg<'_>) {
        if msg.status == Some(100) {
            return;
        }
        let Some(next) = st.ahead_subs.remove(&sid) else {
            return;
        };
        if let Some(Ahead::Asked { reply, .. }) = st.ahead.remove(&next) {
            // One item without waiting: this answer ends the request either way.
            st.free_subs.push((sid, reply));
        }
        // A status: nothing there now (404), or refused.
        if let (None, Some(ack)) = (msg.status, msg.reply) {
            let item = (msg.payload.to_vec(), ack.to_owned(), deliveries(ack));
            let since = Instant::now();
            st.ahead.insert(next, Ahead::Held { item, since });
        }
    }

    /// Acks the items of a get or lease of the stream whose pull-request subject is `next`.
    /// A single ack is held back for the rest of the manager's turn: a consumer's ack and its
    /// next get usually come in one turn, and then one message does both (see `pull`).
    fn ack(&self, next: &str, acks: &[String]) {
        let [ack] = acks else {
            return self.settle_all(acks, b"+ACK");
        };
        let before = self
            .state()
            .held_ack
            .replace((next.to_owned(), ack.clone()));
        if let Some((_, ack)) = before {
            self.publish(&ack, None, b"+ACK");
        }
    }

    /// Sends the ack held back, if any (the manager's turn is over).
    fn flush_held(&self) {
        let held = self.state().held_ack.take();
        if let Some((_, ack)) = held {
            self.publish(&ack, None, b"+ACK");
        }
    }

    /// Answers fetch `token` with what it took (an error if nothing). `answered`: JetStream
    /// has answered its pull request in full, so its subscription can serve another fetch.
    fn finish(
        self: &Arc<Self>,
        st: &mut State,
        token: BackendToken,
        empty: ErrorCode,
        answered: bool,
    ) {
        let Some(f) = st.remove_fetch(token) else {
            return;
        };
        if answered {
            st.free_subs.push((f.sid, f.reply));
        } else {
            st.stale_subs.push((f.sid, Instant::now()));
        }
        if f.got.is_empty() {
            self.complete(token, Outcome::Error(empty));
            return;
        }
        let mut items = Vec::with_capacity(f.bytes);
        let mut deliveries = Vec::with_capacity(f.got.len());
        let mut acks = Vec::with_capacity(f.got.len());
        for (payload, ack, delivered) in f.got {
            let at = items.len();
            items.resize(at + Items::packed_len(payload.len()), 0);
            let _ = Items::push(&mut items, at, &payload);
            deliveries.push(delivered);
            acks.push(ack);
        }
        // A get of one item that came soon after the queue's last one here, and JetStream says
        // more are waiting: the next get's item is asked for now. (A batch get takes what is
        // there with one request: a read-ahead would add one before it. A consumer that takes
        // its time between gets would leave read-ahead items to go back, each counted as a
        // delivery.)
        let now = Instant::now();
        let quick = match st.pace.get_mut(&f.stream.next) {
            Some(pace) => {
                pace.done = now;
                pace.quick
            }
            None => {
                let pace = Pace {
                    done: now,
                    quick: false,
                };
                st.pace.insert(f.stream.next.clone(), pace);
                false
            }
        };
        let more = f.want == 1 && quick && acks.last().is_some_and(|ack| pending(ack) > 0);
        let since = f.since.unwrap_or_else(Instant::now);
        let shared = self.clone();
        let (outcome, settle): (Outcome, Box<dyn FnOnce(Completion) + Send>) = if f.leased {
            st.next_lease += 1;
            let lease = st.next_lease;
            let conn = f.conn;
            let next = f.stream.next.clone();
            (
                Outcome::Leased {
                    lease,
                    deliveries,
                    items,
                },
                Box::new(move |c| match c {
                    Completion::Delivered => {
                        shared.state().leases.insert(
                            lease,
                            Lease {
                                conn,
                                next,
                                acks,
                                since,
                            },
                        );
                    }
                    Completion::Released => shared.settle_all(&acks, b"-NAK"),
                }),
            )
        } else {
            let next = f.stream.next.clone();
            (
                Outcome::Items(items),
                Box::new(move |c| match c {
                    Completion::Delivered => shared.ack(&next, &acks),
                    Completion::Released => shared.settle_all(&acks, b"-NAK"),
                }),
            )
        };
        self.link.complete(BackendDone {
            token,
            outcome,
            settle: Some(settle),
        });
        if more {
            self.read_ahead(st, &f.stream);
        }
    }

    /// Acks (or nacks) items: one message each (explicit acks: the consumer is shared, so an
    /// ack of the last would ack other gateways' items too), written in one go.
    fn settle_all(&self, acks: &[String], word: &[u8]) {
        if let Some(c) = self.conn() {
            c.publish_all(acks.iter().map(|a| (a.as_str(), None, word)));
        }
    }

    /// Item `at` of batch put `token` was stored (`error` none) or not. The put is answered
    /// once its count is known: every item stored, or the first not stored with every earlier
    /// one stored. Later items' PubAcks are then ignored: JetStream may have stored them (room
    /// freed in between); they stay in the stream (PROTOCOL.md §18).
    fn put_answered(&self, st: &mut State, token: BackendToken, at: u32, error: Option<ErrorCode>) {
        let Some(b) = st.batches.get_mut(&token) else {
            return;
        };
        if let Some(answer) = b.answers.get_mut(at as usize) {
            answer.get_or_insert(error);
        }
        while let Some(Some(None)) = b.answers.get(b.stored as usize) {
            b.stored += 1;
        }
        let error = match b.answers.get(b.stored as usize) {
            None => None,
            Some(Some(error)) => *error,
            Some(None) => return,
        };
        let count = b.stored;
        st.batches.remove(&token);
        self.complete(token, Outcome::Accepted { count, error });
    }

    fn message(self: &Arc<Self>, msg: Msg<'_>) {
        if msg.sid != 1 {
            let mut st = self.state();
            match st.fetch_subs.get(&msg.sid).copied() {
                Some(token) => self.fetched(&mut st, token, msg),
                None if st.ahead_subs.contains_key(&msg.sid) => {
                    self.ahead_answered(&mut st, msg.sid, msg)
                }
                None => {
                    // A message for a pull request nobody waits for any more: back it goes.
                    if let Some(ack) = msg.reply.filter(|r| r.starts_with("$JS.ACK.")) {
                        drop(st);
                        self.publish(ack, None, b"-NAK");
                    }
                }
            }
            return;
        }
        let Some(route) = msg
            .subject
            .rsplit('.')
            .next()
            .and_then(|r| r.parse::<u64>().ok())
        else {
            return;
        };
        let mut st = self.state();
        match st.routes.get(&route) {
            Some(Route::Put(..)) => {
                let Some(Route::Put(token, _)) = st.routes.remove(&route) else {
                    return;
                };
                drop(st);
                self.complete(
                    token,
                    match pub_ack(&msg) {
                        None => Outcome::Done,
                        Some(code) => Outcome::Error(code),
                    },
                );
            }
            Some(Route::PutMany(..)) => {
                let Some(Route::PutMany(token, at, _)) = st.routes.remove(&route) else {
                    return;
                };
                self.put_answered(&mut st, token, at, pub_ack(&msg));
            }
            Some(Route::Api(_)) => {
                if let Some(Route::Api(tx)) = st.routes.remove(&route) {
                    let _ = tx.send(msg.payload.to_vec());
                }
            }
            Some(Route::Return) => {
                st.routes.remove(&route);
                if let Some(code) = pub_ack(&msg) {
                    tracing::warn!("an item given back to JetStream was refused: {code}");
                }
            }
            None => {}
        }
    }

    fn fetched(self: &Arc<Self>, st: &mut State, token: BackendToken, msg: Msg<'_>) {
        let Some(f) = st.fetches.get_mut(&token) else {
            return;
        };
        if let Some(status) = msg.status {
            if status == 100 {
                return;
            }
            if !f.got.is_empty() {
                return self.finish(st, token, ErrorCode::Empty, true);
            }
            if f.pull == Pull::Ahead {
                // The read-ahead this get took over found nothing: now the get's own.
                if f.wait == Wait::NoWait {
                    return self.finish(st, token, ErrorCode::Empty, true);
                }
                f.pull = if f.want > 1 { Pull::Try } else { Pull::Wait };
                return self.pull(st, token);
            }
            match (status, f.wait) {
                (404 | 408, Wait::NoWait) => self.finish(st, token, ErrorCode::Empty, true),
                (_, _) if f.pull == Pull::Try => {
                    // Nothing in time, or refused (other pull requests wait for what is
                    // there; a first item beyond `max_bytes` as JetStream counts): one item,
                    // as a plain get.
                    f.pull = Pull::Wait;
                    self.pull(st, token);
                }
                (404 | 408, Wait::Forever) => self.pull(st, token),
                (_, Wait::Forever) => {
                    // Refused for now (409: too many pull requests waiting): not in a loop.
                    tracing::debug!("JetStream pull request status {status}");
                    f.retry_at = Some(Instant::now() + RETRY_PULL);
                }
                _ => self.finish(st, token, ErrorCode::Timeout, true),
            }
            return;
        }
        let Some(ack) = msg.reply else {
            return;
        };
        let packed = Items::packed_len(msg.payload.len()) + usize::from(f.leased);
        if !f.got.is_empty() && f.bytes + packed > f.room {
            // No room in this reply: back it goes, and the reply goes with what it has.
            self.publish(ack, None, b"-NAK");
            return self.finish(st, token, ErrorCode::Empty, false);
        }
        f.got
            .push((msg.payload.to_vec(), ack.to_string(), deliveries(ack)));
        f.bytes += packed;
        f.since.get_or_insert_with(Instant::now);
        if f.got.len() as u32 >= f.want {
            return self.finish(st, token, ErrorCode::Empty, true);
        }
        if matches!(f.pull, Pull::Wait | Pull::Ahead) {
            // The first item came: take what else is there without waiting.
            f.pull = Pull::Rest;
            self.pull(st, token);
        }
    }

    /// Deadlines: puts JetStream never acknowledged, timed gets it never answered, leases
    /// past `ack_wait` (JetStream has redelivered their items by then).
    fn tick(self: &Arc<Self>) {
        let now = Instant::now();
        let mut st = self.state();
        let late: Vec<u64> = st
            .routes
            .iter()
            .filter(|(_, r)| match r {
                Route::Put(_, at) | Route::PutMany(_, _, at) => {
                    now.duration_since(*at) > PUT_TIMEOUT
                }
                _ => false,
            })
            .map(|(k, _)| *k)
            .collect();
        for route in late {
            match st.routes.remove(&route) {
                Some(Route::Put(token, _)) => {
                    self.complete(token, Outcome::Error(ErrorCode::Timeout))
                }
                Some(Route::PutMany(token, at, _)) => {
                    self.put_answered(&mut st, token, at, Some(ErrorCode::Timeout))
                }
                _ => {}
            }
        }
        let expired: Vec<BackendToken> = st
            .fetches
            .iter()
            .filter(|(_, f)| f.deadline.is_some_and(|d| d <= now))
            .map(|(t, _)| *t)
            .collect();
        for token in expired {
            self.finish(&mut st, token, ErrorCode::Timeout, false);
        }
        let retry: Vec<BackendToken> = st
            .fetches
            .iter_mut()
            .filter(|(_, f)| f.retry_at.is_some_and(|t| t <= now))
            .map(|(t, f)| {
                f.retry_at = None;
                *t
            })
            .collect();
        for token in retry {
            self.pull(&mut st, token);
        }
        let linger = FOREVER_SLICE + Duration::from_secs(5);
        let conn = self.conn();
        st.stale_subs.retain(|(sid, since)| {
            let keep = now.duration_since(*since) < linger;
            if let (false, Some(c)) = (keep, &conn) {
                c.unsubscribe(*sid);
            }
            keep
        });
        let ack_wait = self.opts.ack_wait;
        st.leases
            .retain(|_, l| now.duration_since(l.since) < ack_wait);
        // Read-ahead items nobody took go back; a read-ahead JetStream never answered (a
        // `no_wait` request is answered at once) is given up, so the queue may have another.
        let hold = self.opts.read_ahead;
        let mut unclaimed = Vec::new();
        let mut unanswered = Vec::new();
        // Not while disconnected: a `-NAK` would be lost, and the item would wait for `ack_wait`.
        let connected = self.link.health().state("nats").connected;
        st.ahead.retain(|_, ahead| match ahead {
            Ahead::Held { item, since } if connected && now.duration_since(*since) >= hold => {
                unclaimed.push(std::mem::take(&mut item.1));
                false
            }
            Ahead::Asked { sid, since, .. } if now.duration_since(*since) >= GET_GRACE => {
                unanswered.push(*sid);
                false
            }
            _ => true,
        });
        for sid in unanswered {
            st.ahead_subs.remove(&sid);
            st.stale_subs.push((sid, now));
        }
        drop(st);
        self.settle_all(&unclaimed, b"-NAK");
    }

    /// Gives back every read-ahead item held (the gateway is stopping).
    fn release_ahead(&self) {
        let held: Vec<String> = self
            .state()
            .ahead
            .drain()
            .filter_map(|(_, ahead)| match ahead {
                Ahead::Held { item, .. } => Some(item.1),
                Ahead::Asked { .. } => None,
            })
            .collect();
        self.settle_all(&held, b"-NAK");
    }

    /// After a reconnect: pull requests in flight were lost with the connection; ask again.
    fn reconnected(self: &Arc<Self>) {
        let mut st = self.state();
        // Read-aheads asked for were lost too; the next gets ask for themselves.
        let asked: Vec<u64> = st.ahead_subs.drain().map(|(sid, _)| sid).collect();
        st.ahead
            .retain(|_, ahead| matches!(ahead, Ahead::Held { .. }));
        let now = Instant::now();
        st.stale_subs
            .extend(asked.into_iter().map(|sid| (sid, now)));
        let tokens: Vec<BackendToken> = st.fetches.keys().copied().collect();
        for token in tokens {
            self.pull(&mut st, token);
        }
    }

    /// Asks JetStream each queue's length (on the lengths thread: the API round trips wait).
    fn refresh_lengths(&self) {
        if !self.link.health().state("nats").connected {
            // Unknown while disconnected: no stale length is shown.
            self.lengths
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clear();
            return;
        }
        let names: Vec<String> = self.state().streams.keys().cloned().collect();
        for name in names {
            let stream_name = format!("{}{}", self.opts.prefix, stream_token(&name));
            let len = self
                .api(&format!("$JS.API.STREAM.INFO.{stream_name}"), &json!({}))
                .ok()
                .and_then(|info| info.pointer("/state/messages").and_then(Value::as_u64));
            let mut lengths = self.lengths.lock().unwrap_or_else(PoisonError::into_inner);
            match len {
                Some(n) => lengths.insert(name, n.min(u64::from(u32::MAX)) as u32),
                // Unknown now: no stale length is shown.
                None => lengths.remove(&name),
            };
        }
    }

    /// A request to the JetStream API, waited for.
    fn api(&self, subject: &str, body: &Value) -> Result<Value, String> {
        let (tx, rx) = std::sync::mpsc::channel();
        let route = {
            let mut st = self.state();
            let route = st.next_route;
            st.next_route += 1;
            st.routes.insert(route, Route::Api(tx));
            route
        };
        let reply = self.reply_subject(route);
        self.publish(subject, Some(&reply), body.to_string().as_bytes());
        let answer = rx.recv_timeout(API_TIMEOUT);
        self.state().routes.remove(&route);
        let bytes = answer.map_err(|_| format!("no answer to {subject} (is JetStream on?)"))?;
        let value: Value = serde_json::from_slice(&bytes)
            .map_err(|e| format!("{subject}: not JSON ({e}): JetStream not enabled?"))?;
        Ok(value)
    }

    /// Makes sure queue `name`'s stream and the shared consumer exist.
    fn ensure(&self, name: &str, spec: QueueSpec) -> Result<Stream, String> {
        let token = stream_token(name);
        let stream_name = format!("{}{}", self.opts.prefix, token);
        let subject = format!(
            "{}.{}",
            self.opts.prefix.trim_end_matches('_').to_lowercase(),
            token
        );
        let config = json!({
            "name": stream_name,
            "subjects": [subject],
            "retention": "workqueue",
            "storage": "file",
            "max_msgs": i64::from(spec.capacity),
            "max_msg_size": i64::from(spec.max_item),
            "discard": "new",
            "num_replicas": self.opts.replicas,
        });
        let created = self.api(&format!("$JS.API.STREAM.CREATE.{stream_name}"), &config)?;
        if let Some(err) = created.get("error") {
            // A stream of that name with other limits: take the queue's limits.
            let updated = self.api(&format!("$JS.API.STREAM.UPDATE.{stream_name}"), &config)?;
            if let Some(err2) = updated.get("error") {
                return Err(format!("stream {stream_name}: {err} / {err2}"));
            }
        }
        let consumer = json!({
            "stream_name": stream_name,
            "config": {
                "durable_name": CONSUMER,
                "ack_policy": "explicit",
                "ack_wait": self.opts.ack_wait.as_nanos() as u64,
                "max_deliver": -1,
                "max_ack_pending": 100_000,
                "max_waiting": 4096,
                "deliver_policy": "all",
                "replay_policy": "instant",
            }
        });
        let made = self.api(
            &format!("$JS.API.CONSUMER.DURABLE.CREATE.{stream_name}.{CONSUMER}"),
            &consumer,
        )?;
        if let Some(err) = made.get("error") {
            // Another gateway made it first with the same name: use it.
            let info = self.api(
                &format!("$JS.API.CONSUMER.INFO.{stream_name}.{CONSUMER}"),
                &json!({}),
            )?;
            if info.get("error").is_some() {
                return Err(format!("consumer on {stream_name}: {err}"));
            }
        }
        Ok(Stream {
            next: format!("$JS.API.CONSUMER.MSG.NEXT.{stream_name}.{CONSUMER}"),
            subject,
        })
    }
}

/// `None` for a PubAck, else why the message was not stored.
fn pub_ack(msg: &Msg<'_>) -> Option<ErrorCode> {
    if let Some(status) = msg.status {
        // 503: no responders (the stream is gone, or JetStream has no leader right now).
        tracing::debug!("JetStream publish status {status}");
        return Some(ErrorCode::Timeout);
    }
    // A PubAck (`{"stream":…,"seq":…}`) names no error: no JSON parse on the hot path.
    if !msg.payload.windows(7).any(|w| w == b"\"error\"") {
        return None;
    }
    let value: Value = serde_json::from_slice(msg.payload).ok()?;
    let err = value.get("error")?;
    let code = err.get("err_code").and_then(Value::as_u64).unwrap_or(0);
    let text = err.get("description").and_then(Value::as_str).unwrap_or("");
    Some(
        if code == 10077 || text.contains("maximum messages exceeded") {
            ErrorCode::Full
        } else if text.contains("message size") {
            ErrorCode::TooLarge
        } else {
            tracing::warn!("JetStream refused a message: {text}");
            ErrorCode::Timeout
        },
    )
}

/// The delivery count in an ack subject, at most 255.
fn deliveries(ack: &str) -> u8 {
    ack_field(ack, 0).map_or(1, |n| n.clamp(1, 255) as u8)
}

/// How many messages the consumer had left to deliver after this one, from its ack subject
/// (0 if it does not say).
fn pending(ack: &str) -> u64 {
    ack_field(ack, 4).unwrap_or(0)
}

/// A number of an ack subject, `after` tokens past the delivery count:
/// `$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<time>.<pending>`, or
/// with domain and account hash before the stream (and a random token at the end).
fn ack_field(ack: &str, after: usize) -> Option<u64> {
    let tokens: Vec<&str> = ack.split('.').collect();
    let delivered = match tokens.len() {
        9 => 4,
        n if n >= 11 => 6,
        _ => return None,
    };
    tokens.get(delivered + after)?.parse().ok()
}

/// A queue name as one stream-name and subject token: letters, digits and `-` stay; every
/// other byte becomes `_` and two hex digits.
fn stream_token(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' {
            out.push(b as char);
        } else {
            out.push_str(&format!("_{b:02x}"));
        }
    }
    out
}

/// The manager's side: hands requests to the shared state (never blocks on the network).
struct JetStreamBackend {
    shared: Arc<Shared>,
}

impl Backend for JetStreamBackend {
    fn flush(&mut self) {
        self.shared.flush_held();
    }

    fn len(&self, name: &str) -> Option<u32> {
        let lengths = self.shared.lengths.lock();
        lengths
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .copied()
    }

    fn request(&mut self, request: BackendRequest<'_>) {
        let s = &self.shared;
        let mut st = s.state();
        let stream_of = |st: &State, name: &str| st.streams.get(name).cloned();
        match request {
            BackendRequest::Put {
                token, name, item, ..
            } => {
                let Some(stream) = stream_of(&st, name) else {
                    drop(st);
                    return s.complete(token, Outcome::Error(ErrorCode::NoSuchObject));
                };
                let route = st.next_route;
                st.next_route += 1;
                st.routes.insert(route, Route::Put(token, Instant::now()));
                drop(st);
                let reply = s.reply_subject(route);
                s.publish(&stream.subject, Some(&reply), item);
            }
            BackendRequest::PutMany {
                token, name, items, ..
            } => {
                let Some(stream) = stream_of(&st, name) else {
                    drop(st);
                    return s.complete(
                        token,
                        Outcome::Accepted {
                            count: 0,
                            error: Some(ErrorCode::NoSuchObject),
                        },
                    );
                };
                let Some(c) = s.conn() else {
                    drop(st);
                    return s.complete(
                        token,
                        Outcome::Accepted {
                            count: 0,
                            error: Some(ErrorCode::Timeout),
                        },
                    );
                };
                // Every item at once, each with a reply subject of its own; the PubAcks come
                // in any order and are put back in order by `put_answered`.
                let now = Instant::now();
                let first = st.next_route;
                let n = items.iter().count();
                st.next_route += n as u64;
                for (at, route) in (first..first + n as u64).enumerate() {
                    st.routes
                        .insert(route, Route::PutMany(token, at as u32, now));
                }
                st.batches.insert(
                    token,
                    PutMany {
                        answers: vec![None; n],
                        stored: 0,
                    },
                );
                if n == 0 {
                    s.put_answered(&mut st, token, 0, None);
                    return;
                }
                drop(st);
                let replies: Vec<String> = (first..first + n as u64)
                    .map(|r| format!("{}.{r}", c.inbox()))
                    .collect();
                c.publish_all(
                    items
                        .iter()
                        .zip(&replies)
                        .map(|(item, reply)| (stream.subject.as_str(), Some(reply.as_str()), item)),
                );
            }
            BackendRequest::Get {
                token,
                conn,
                name,
                max_items,
                max_bytes,
                wait,
                lease_ms,
                ..
            } => {
                let Some(stream) = stream_of(&st, name) else {
                    drop(st);
                    return s.complete(token, Outcome::Error(ErrorCode::NoSuchObject));
                };
                // The stream's read-ahead item is this get's first; a read-ahead asked for
                // becomes this get's pull request (the get waits for its answer: an item
                // there, or one coming, is older than any its own pull could take).
                let quarter = s.opts.read_ahead / 4;
                if let Some(pace) = st.pace.get_mut(&stream.next) {
                    pace.quick = pace.done.elapsed() < quarter;
                }
                let ahead = st.ahead.remove(&stream.next);
                let sub = match ahead {
                    Some(Ahead::Asked { sid, ref reply, .. }) => {
                        st.ahead_subs.remove(&sid);
                        Some((sid, reply.clone()))
                    }
                    _ => s.subscription(&mut st),
                };
                let Some((sid, reply)) = sub else {
                    // Not connected yet (only a read-ahead asked for has a subscription of its
                    // own): a held item stays for the next get.
                    if let Some(held) = ahead {
                        st.ahead.insert(stream.next.clone(), held);
                    }
                    drop(st);
                    return s.complete(token, Outcome::Error(ErrorCode::Timeout));
                };
                let deadline = match wait {
                    Wait::Millis(ms) => {
                        Some(Instant::now() + Duration::from_millis(ms.into()) + GET_GRACE)
                    }
                    _ => None,
                };
                let want = max_items.max(1);
                let leased = lease_ms.is_some();
                let (got, since, pull) = match ahead {
                    Some(Ahead::Held { item, since }) => (vec![item], Some(since), Pull::Rest),
                    Some(Ahead::Asked { .. }) => (Vec::new(), None, Pull::Ahead),
                    None if want > 1 => (Vec::new(), None, Pull::Try),
                    None => (Vec::new(), None, Pull::Wait),
                };
                let bytes = got
                    .iter()
                    .map(|(payload, _, _)| Items::packed_len(payload.len()) + usize::from(leased))
                    .sum();
                let taken = got.len() as u32;
                st.add_fetch(
                    token,
                    Fetch {
                        conn,
                        stream,
                        want,
                        room: max_bytes as usize,
                        wait,
                        leased,
                        got,
                        bytes,
                        since,
                        sid,
                        reply,
                        pull,
                        deadline,
                        retry_at: None,
                    },
                );
                match pull {
                    Pull::Ahead => {}
                    Pull::Rest if taken >= want => s.finish(&mut st, token, ErrorCode::Empty, true),
                    _ => s.pull(&mut st, token),
                }
            }
            BackendRequest::Ack { token, conn, lease }
            | BackendRequest::Nack { token, conn, lease } => {
                let ack = matches!(request, BackendRequest::Ack { .. });
                let mine = st.leases.get(&lease).is_some_and(|l| l.conn == conn);
                let taken = if mine { st.leases.remove(&lease) } else { None };
                drop(st);
                match taken {
                    Some(l) => {
                        if ack {
                            s.ack(&l.next, &l.acks);
                        } else {
                            s.settle_all(&l.acks, b"-NAK");
                        }
                        s.complete(token, Outcome::Done);
                    }
                    None => s.complete(token, Outcome::Error(ErrorCode::NoSuchLease)),
                }
            }
            BackendRequest::Return { name, item, .. } => {
                let Some(stream) = stream_of(&st, name) else {
                    return;
                };
                let route = st.next_route;
                st.next_route += 1;
                st.routes.insert(route, Route::Return);
                drop(st);
                let reply = s.reply_subject(route);
                s.publish(&stream.subject, Some(&reply), item);
            }
            BackendRequest::Cancel { token } => {
                if let Some(f) = st.remove_fetch(token) {
                    st.stale_subs.push((f.sid, Instant::now()));
                    drop(st);
                    for (_, ack, _) in f.got {
                        s.publish(&ack, None, b"-NAK");
                    }
                }
            }
            BackendRequest::Closed { conn } => {
                let gone: Vec<u64> = st
                    .leases
                    .iter()
                    .filter(|(_, l)| l.conn == conn)
                    .map(|(k, _)| *k)
                    .collect();
                let mut acks = Vec::new();
                for lease in gone {
                    if let Some(l) = st.leases.remove(&lease) {
                        acks.extend(l.acks);
                    }
                }
                drop(st);
                s.settle_all(&acks, b"-NAK");
            }
            BackendRequest::Created { name, spec, .. } => {
                drop(st);
                let shared = s.clone();
                let name = name.to_owned();
                // The API round trips must not hold up the manager's loop.
                let _ = std::thread::Builder::new()
                    .name("depot-nats create".into())
                    .spawn(move || match shared.ensure(&name, spec) {
                        Ok(stream) => {
                            shared.state().streams.insert(name, stream);
                        }
                        Err(e) => tracing::warn!("queue '{name}': {e}"),
                    });
            }
        }
    }
}

struct Router(std::sync::Weak<Shared>);

impl Handler for Router {
    fn message(&self, msg: Msg<'_>) {
        if let Some(s) = self.0.upgrade() {
            s.message(msg);
        }
    }

    fn connected(&self, server: &str, again: bool) {
        if let Some(s) = self.0.upgrade() {
            s.link.health().connected(server);
            tracing::info!(server, again, "connected to NATS");
            if again {
                s.reconnected();
            }
        }
    }

    fn disconnected(&self, why: &str) {
        if let Some(s) = self.0.upgrade() {
            tracing::warn!("lost the NATS connection: {why}");
            s.link.health().disconnected(why);
        }
    }
}

/// Starts the JetStream backend: connects, makes sure every declared queue has its stream
/// and consumer, and returns the [`Backend`] a manager hands its queue operations to.
pub fn start(
    opts: JetStreamOptions,
    link: BackendLink,
    queues: &[(String, QueueSpec)],
) -> Result<Box<dyn Backend>, String> {
    let loop_link = opts.io_on_loop.then(|| link.clone());
    let shared = Arc::new(Shared {
        conn: OnceLock::new(),
        state: Mutex::new(State::default()),
        link,
        opts: opts.clone(),
        lengths: Mutex::new(HashMap::new()),
    });
    let conn = Conn::start(
        Options {
            servers: opts.servers.clone(),
            auth: opts.auth.clone(),
            name: "depot gateway".into(),
            tls: opts.tls.clone(),
            busy_poll: opts.busy_poll,
        },
        Arc::new(Router(Arc::downgrade(&shared))),
        Duration::from_secs(10),
    )
    .map_err(|e| e.to_string())?;
    // Most publishes come from the manager's event loop. When it also reads the connection it
    // sends them itself (with the reads on the loop, measured 6-19 % faster than handing them to
    // the writer thread); else the writer thread sends for it (measured faster then).
    conn.set_write_on_caller(opts.io_on_loop);
    let _ = shared.conn.set(conn);
    for (name, spec) in queues {
        let stream = shared
            .ensure(name, *spec)
            .map_err(|e| format!("queue '{name}': {e}"))?;
        shared.state().streams.insert(name.clone(), stream);
    }
    // Set-up waited for JetStream's answers on this thread (the loop's): only now may the loop
    // read them.
    if let (Some(link), Some(conn)) = (loop_link, shared.conn()) {
        conn.read_on_loop(link);
    }
    let ticker = Arc::downgrade(&shared);
    std::thread::Builder::new()
        .name("depot-nats timer".into())
        .spawn(move || loop {
            std::thread::sleep(TICK);
            match ticker.upgrade() {
                Some(s) => s.tick(),
                None => return,
            }
        })
        .map_err(|e| e.to_string())?;
    let asker = Arc::downgrade(&shared);
    std::thread::Builder::new()
        .name("depot-nats lengths".into())
        .spawn(move || loop {
            std::thread::sleep(LENGTHS_EVERY);
            match asker.upgrade() {
                Some(s) => s.refresh_lengths(),
                None => return,
            }
        })
        .map_err(|e| e.to_string())?;
    Ok(Box::new(JetStreamBackend { shared }))
}

impl Drop for JetStreamBackend {
    fn drop(&mut self) {
        self.shared.flush_held();
        self.shared.release_ahead();
        if let Some(c) = self.shared.conn() {
            c.close();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_keep_names_apart() {
        assert_eq!(stream_token("task_queue"), "task_5fqueue");
        assert_eq!(stream_token("a.b"), "a_2eb");
        assert_ne!(stream_token("a_2e"), stream_token("a."));
    }

    #[test]
    fn delivery_counts_come_from_ack_subjects() {
        assert_eq!(deliveries("$JS.ACK.S.depot.3.10.10.1700000000.0"), 3);
        assert_eq!(
            deliveries("$JS.ACK.dom.hash.S.depot.7.10.10.1700000000.0.tok"),
            7
        );
        assert_eq!(deliveries("$JS.ACK.S.depot.999.10.10.1700000000.0"), 255);
        assert_eq!(deliveries("$JS.ACK.S"), 1);
    }

    #[test]
    fn pending_counts_come_from_ack_subjects() {
        assert_eq!(pending("$JS.ACK.S.depot.1.10.10.1700000000.42"), 42);
        assert_eq!(
            pending("$JS.ACK.dom.hash.S.depot.1.10.10.1700000000.5.tok"),
            5
        );
        assert_eq!(pending("$JS.ACK.dom.hash.S.depot.1.10.10.1700000000.6"), 6);
        assert_eq!(pending("$JS.ACK.S.depot"), 0);
    }
}
