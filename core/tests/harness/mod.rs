//! An in-memory harness on virtual time: one [`Manager`] and any number of [`Client`] state
//! machines, wired together by a `pump` that moves bytes both ways until nothing changes, in
//! the spirit of quinn-proto's test `Pair`.
//!
//! Storage is given as `Vec`s (the core's `alloc` feature), so the harness owns
//! `Manager<'static>` and `Client<'static>` outright.
//!
//! The "network" is direct: a client's bytes go into the manager as far as the manager takes
//! them (the rest stays in the client's transmit buffer, as in a full socket), and back. Each
//! peer can stop reading or writing to model a peer that stalls. Time only moves when a test
//! calls [`Pair::advance`], which wakes the state machines exactly when their `poll_timeout`
//! asks, as a real transport would.
#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};

use depot_core::client::{ClientConfig, SendError};
use depot_core::wire::{
    ErrorCode, Handle, ManagerStatus, ObjectInfo, Op, QueueSize, QueueSpec, Reply, Wait,
};
use depot_core::*;

pub const KEY: &[u8] = b"producer";

/// A reply with its borrowed parts copied out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owned {
    Done,
    Opened(ObjectInfo),
    Item(Vec<u8>),
    Size(QueueSize),
    Stat(Option<OwnedStat>),
    Status(ManagerStatus),
    Error(ErrorCode),
    Accepted(u32, Option<ErrorCode>),
    Items(Vec<Vec<u8>>),
    Leased {
        lease: u64,
        deliveries: Vec<u8>,
        items: Vec<Vec<u8>>,
    },
    Flag(bool),
    Count(u32),
    Value(Vec<u8>),
    Values(Vec<Vec<u8>>),
    Failed(String),
    Session(bool),
    /// kind, server, connected, since_ms, reconnects, last_error.
    Backend(Option<(String, String, bool, u64, u32, String)>),
}

/// `wire::ObjectStat` with an owned name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedStat {
    pub name: String,
    pub info: ObjectInfo,
    pub len: u32,
    pub bytes: u32,
    pub storage: u32,
    pub getters: u32,
    pub putters: u32,
    pub joiners: u32,
    pub unfinished: u32,
    pub total_put: u64,
    pub total_got: u64,
}

impl Owned {
    pub fn from_reply(reply: &Reply) -> Owned {
        match *reply {
            Reply::Done => Owned::Done,
            Reply::Opened(info) => Owned::Opened(info),
            Reply::Item { item, .. } => Owned::Item(item.to_vec()),
            Reply::Size(size) => Owned::Size(size),
            Reply::Stat(stat) => Owned::Stat(stat.map(|s| OwnedStat {
                name: s.name.to_string(),
                info: s.info,
                len: s.len,
                bytes: s.bytes,
                storage: s.storage,
                getters: s.getters,
                putters: s.putters,
                joiners: s.joiners,
                unfinished: s.unfinished,
                total_put: s.total_put,
                total_got: s.total_got,
            })),
            Reply::Status(status) => Owned::Status(status),
            Reply::Error(code) => Owned::Error(code),
            Reply::Accepted { count, error } => Owned::Accepted(count, error),
            Reply::Items { items, .. } => Owned::Items(items.iter().map(<[u8]>::to_vec).collect()),
            Reply::Leased {
                lease,
                deliveries,
                items,
                ..
            } => Owned::Leased {
                lease,
                deliveries: deliveries.to_vec(),
                items: items.iter().map(<[u8]>::to_vec).collect(),
            },
            Reply::Flag(flag) => Owned::Flag(flag),
            Reply::Count(n) => Owned::Count(n),
            Reply::Value(v) => Owned::Value(v.to_vec()),
            Reply::Values(items) => Owned::Values(items.iter().map(<[u8]>::to_vec).collect()),
            Reply::Failed(text) => Owned::Failed(text.to_owned()),
            Reply::Session { resumed } => Owned::Session(resumed),
            Reply::Backend(h) => Owned::Backend(h.map(|h| {
                (
                    h.kind.to_owned(),
                    h.server.to_owned(),
                    h.connected,
                    h.since_ms,
                    h.reconnects,
                    h.last_error.to_owned(),
                )
            })),
            other => panic!("a reply the harness does not know: {other:?}"),
        }
    }
}

/// What a client saw, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    Connected,
    Reply(u32, Owned),
    Closed(Error),
}

/// Drains every event of `client`, copying them out.
pub fn drain_events(client: &mut Client<'_>) -> Vec<Seen> {
    let mut out = Vec::new();
    while let Some(ev) = client.poll_event() {
        out.push(match ev {
            Event::Connected => Seen::Connected,
            Event::Reply { id, reply } => Seen::Reply(id, Owned::from_reply(&reply)),
            Event::Closed(e) => Seen::Closed(e),
            other => panic!("an event the harness does not know: {other:?}"),
        });
    }
    out
}

/// The sizes of everything, chosen per test.
#[derive(Debug, Clone)]
pub struct Setup {
    pub config: ManagerConfig,
    pub client_config: ClientConfig,
    /// Declared queues: name, spec, storage bytes.
    pub queues: Vec<(String, QueueSpec, usize)>,
    /// Declared objects other than queues: name, kind, spec, storage bytes.
    pub objects: Vec<(String, wire::ObjectKind, QueueSpec, usize)>,
    /// Spare slots for `Create`: storage bytes each.
    pub spares: Vec<usize>,
    pub conns: usize,
    /// Connections own their buffers (`Connection::owned`, limits `conn_rx` and `conn_tx`)
    /// instead of borrowing slices of those sizes.
    pub owned_conns: bool,
    pub conn_rx: usize,
    pub conn_tx: usize,
    /// The park store: slots of this many bytes…
    pub conn_park: usize,
    /// …and this many of them, shared by every connection.
    pub park_slots: usize,
    pub waiters: usize,
    /// Leased items the manager keeps at once (each in a slot of `conn_park` bytes).
    pub lease_slots: usize,
    pub client_rx: usize,
    pub client_tx: usize,
    pub client_slots: usize,
    pub manager_key: Vec<u8>,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            config: ManagerConfig::default(),
            client_config: ClientConfig::default(),
            queues: vec![(
                "task_queue".into(),
                QueueSpec {
                    capacity: 16,
                    max_item: 256,
                    mode: depot_core::QueueMode::Raw,
                },
                4096,
            )],
            objects: Vec::new(),
            spares: Vec::new(),
            conns: 8,
            owned_conns: false,
            conn_rx: 4096,
            conn_tx: 4096,
            conn_park: 256,
            park_slots: 32,
            waiters: 32,
            lease_slots: 16,
            client_rx: 4096,
            client_tx: 4096,
            client_slots: 16,
            manager_key: KEY.to_vec(),
        }
    }
}

impl Setup {
    /// The default setup with one queue `name` of these limits and `storage` bytes.
    pub fn queue(name: &str, capacity: u32, max_item: u32, storage: usize) -> Setup {
        Setup {
            queues: vec![(
                name.into(),
                QueueSpec {
                    capacity,
                    max_item,
                    mode: depot_core::QueueMode::Raw,
                },
                storage,
            )],
            ..Setup::default()
        }
    }
}

fn zeroed(n: usize) -> Vec<u8> {
    vec![0u8; n]
}

/// One client and what the harness knows about it.
pub struct Peer {
    pub client: Client<'static>,
    /// Its connection on the manager, until either side closes.
    pub conn: Option<ConnId>,
    /// The transport delivers the manager's bytes to the client.
    pub reading: bool,
    /// The transport delivers the client's bytes to the manager.
    pub writing: bool,
    pub connected: bool,
    pub closed: Option<Error>,
    /// Replies not yet taken, by request id.
    pub replies: BTreeMap<u32, Owned>,
    /// Every event, in order.
    pub log: Vec<Seen>,
    /// Why the manager closed this connection, if it did.
    pub manager_reason: Option<wire::CloseReason>,
}

pub struct Pair {
    pub m: Manager<'static>,
    pub now: Instant,
    pub peers: Vec<Peer>,
    pub setup: Setup,
    /// Connections `poll_ready` named, in order.
    pub ready_log: Vec<ConnId>,
    nonce_counter: u64,
}

/// A fresh, distinct nonce for each use (deterministic, so runs repeat).
pub fn nonce(n: u64, side: u8) -> [u8; 32] {
    let mut out = [side; 32];
    out[..8].copy_from_slice(&n.to_le_bytes());
    out
}

impl Pair {
    pub fn new(setup: Setup) -> Pair {
        let mut objects = Vec::new();
        for (name, spec, storage) in &setup.queues {
            objects.push(ObjectSlot::queue(name, *spec, zeroed(*storage)).expect("queue declared"));
        }
        for (name, kind, spec, storage) in &setup.objects {
            let slot = ObjectSlot::declare(name, *kind, *spec, zeroed(*storage));
            objects.push(slot.expect("object declared"));
        }
        for storage in &setup.spares {
            objects.push(ObjectSlot::spare(zeroed(*storage)));
        }
        let conns: Vec<Connection<'static>> = (0..setup.conns)
            .map(|_| match setup.owned_conns {
                true => Connection::owned(setup.conn_rx, setup.conn_tx),
                false => Connection::new(zeroed(setup.conn_rx), zeroed(setup.conn_tx)),
            })
            .collect();
        let resources = Resources {
            objects: objects.into(),
            connections: conns.into(),
            waiters: vec![Waiter::EMPTY; setup.waiters].into(),
            parked: ParkStore::slots(zeroed(setup.conn_park * setup.park_slots), setup.conn_park),
        };
        let mut m = Manager::new(setup.config, &setup.manager_key, resources);
        m.serve_leases(LeaseStore::new(
            vec![LeaseSlot::EMPTY; setup.lease_slots],
            ParkStore::slots(zeroed(setup.conn_park * setup.lease_slots), setup.conn_park),
        ));
        Pair {
            m,
            now: Instant::ZERO,
            peers: Vec::new(),
            setup,
            ready_log: Vec::new(),
            nonce_counter: 0,
        }
    }

    pub fn with_default() -> Pair {
        Pair::new(Setup::default())
    }

    fn next_nonce(&mut self, side: u8) -> [u8; 32] {
        self.nonce_counter += 1;
        nonce(self.nonce_counter, side)
    }

    /// A client with `key`, accepted by the manager; not pumped yet.
    pub fn add_client_with_key(&mut self, key: &[u8]) -> usize {
        self.try_add_client(key, &[]).expect("accept")
    }

    /// A client with `key` coming from `source`, if the manager accepts it; not pumped yet.
    pub fn try_add_client(&mut self, key: &[u8], source: &[u8]) -> Result<usize, AcceptError> {
        self.try_add_named("", key, source)
    }

    /// A client that names its key `name`, coming from `source`; not pumped yet.
    pub fn try_add_named(
        &mut self,
        name: &str,
        key: &[u8],
        source: &[u8],
    ) -> Result<usize, AcceptError> {
        let m_nonce = self.next_nonce(0xAA);
        let conn = self.m.accept(self.now, m_nonce, source)?;
        let c_nonce = self.next_nonce(0xCC);
        let config = ClientConfig {
            key_name: KeyName::new(name).expect("key name"),
            ..self.setup.client_config
        };
        let client = Client::new(
            config,
            key,
            c_nonce,
            self.now,
            zeroed(self.setup.client_rx),
            zeroed(self.setup.client_tx),
            vec![RequestSlot::FREE; self.setup.client_slots],
        );
        self.peers.push(Peer {
            client,
            conn: Some(conn),
            reading: true,
            writing: true,
            connected: false,
            closed: None,
            replies: BTreeMap::new(),
            log: Vec::new(),
            manager_reason: None,
        });
        Ok(self.peers.len() - 1)
    }

    /// A connection from `source` that never sends a byte, as the transport would accept it.
    pub fn accept_silent(&mut self, source: &[u8]) -> Result<ConnId, AcceptError> {
        let m_nonce = self.next_nonce(0xEE);
        self.m.accept(self.now, m_nonce, source)
    }

    /// A client that connects (handshake done) and is ready for requests.
    pub fn connect(&mut self) -> usize {
        let c = self.add_client_with_key(KEY);
        self.pump();
        assert!(self.peers[c].connected, "client {c} did not connect");
        c
    }

    /// Moves bytes and events until nothing changes.
    pub fn pump(&mut self) {
        for _ in 0..10_000 {
            if !self.step() {
                return;
            }
        }
        panic!("pump did not settle");
    }

    /// One round over every peer; `true` if anything moved.
    fn step(&mut self) -> bool {
        let mut progress = false;
        let now = self.now;
        while let Some(id) = self.m.poll_ready() {
            self.ready_log.push(id);
            progress = true;
        }
        for p in &mut self.peers {
            let Some(conn) = p.conn else { continue };
            // Client to manager.
            if p.writing {
                let out = p.client.poll_transmit().to_vec();
                if !out.is_empty() {
                    let n = self.m.handle_input(conn, now, &out);
                    p.client.handle_transmitted(n);
                    progress |= n > 0;
                }
            }
            // Manager to client.
            if p.reading {
                let out = self.m.poll_transmit(conn).to_vec();
                if !out.is_empty() {
                    let n = p.client.handle_input(&out);
                    self.m.handle_transmitted(conn, now, n);
                    progress |= n > 0;
                }
            }
            // Client events.
            for seen in drain_events(&mut p.client) {
                progress = true;
                match &seen {
                    Seen::Connected => p.connected = true,
                    Seen::Reply(id, reply) => {
                        let old = p.replies.insert(*id, reply.clone());
                        assert!(old.is_none(), "two replies to request {id}");
                    }
                    Seen::Closed(e) => p.closed = Some(*e),
                }
                p.log.push(seen);
            }
            // Closing: the manager is done, or the client gave up.
            if self.m.wants_close(conn) {
                p.manager_reason = self.m.close_reason(conn);
                self.m.handle_close(conn, now);
                p.conn = None;
                p.client.handle_close();
                progress = true;
            } else if p.closed.is_some() {
                p.manager_reason = self.m.close_reason(conn);
                self.m.handle_close(conn, now);
                p.conn = None;
                progress = true;
            }
            // A client closed by the manager sees the socket close too.
            if p.conn.is_none() {
                for seen in drain_events(&mut p.client) {
                    if let Seen::Closed(e) = seen {
                        p.closed = Some(e);
                    }
                    p.log.push(seen);
                }
            }
        }
        progress
    }

    /// The earliest deadline of anyone.
    pub fn next_deadline(&self) -> Option<Instant> {
        let mut next = self.m.poll_timeout();
        for p in &self.peers {
            if p.closed.is_none() {
                if let Some(t) = p.client.poll_timeout() {
                    next = Some(next.map_or(t, |n: Instant| n.min(t)));
                }
            }
        }
        next
    }

    /// Moves the clock forward by `ms`, waking each state machine at every deadline it asked
    /// for on the way, and pumping after each.
    pub fn advance(&mut self, ms: u64) {
        let target = self.now.add_millis(ms);
        loop {
            self.pump();
            match self.next_deadline() {
                Some(t) if t <= target => {
                    if t > self.now {
                        self.now = t;
                    }
                    self.fire_timeouts();
                }
                _ => break,
            }
        }
        self.now = target;
        self.fire_timeouts();
        self.pump();
    }

    fn fire_timeouts(&mut self) {
        let now = self.now;
        if self.m.poll_timeout().is_some_and(|t| t <= now) {
            self.m.handle_timeout(now);
        }
        for p in &mut self.peers {
            if p.client.poll_timeout().is_some_and(|t| t <= now) {
                p.client.handle_timeout(now);
            }
        }
        // Guard against a deadline that never clears (it would loop `advance` forever).
        self.pump();
        if self.m.poll_timeout().is_some_and(|t| t <= now) {
            self.m.handle_timeout(now);
            self.pump();
            assert!(
                self.m.poll_timeout().is_none_or(|t| t > now),
                "manager deadline {:?} still due at {:?} after handle_timeout",
                self.m.poll_timeout(),
                now
            );
        }
    }

    /// Sends a request from client `c` (not pumped).
    pub fn send(&mut self, c: usize, op: Op) -> u32 {
        self.try_send(c, op)
            .unwrap_or_else(|e| panic!("client {c}: send failed: {e}"))
    }

    /// Sends a request from client `c` (not pumped), or says why the client refused it.
    pub fn try_send(&mut self, c: usize, op: Op) -> Result<u32, SendError> {
        let now = self.now;
        self.peers[c].client.send(now, op)
    }

    /// The reply to request `id` of client `c`, if it came; taken out.
    pub fn take(&mut self, c: usize, id: u32) -> Option<Owned> {
        self.peers[c].replies.remove(&id)
    }

    /// Sends a request, pumps, and returns its reply (which must have come).
    pub fn call(&mut self, c: usize, op: Op) -> Owned {
        let id = self.send(c, op);
        self.pump();
        self.take(c, id)
            .unwrap_or_else(|| panic!("client {c}: no reply to {op:?}"))
    }

    pub fn open(&mut self, c: usize, name: &str) -> Handle {
        match self.call(c, Op::Open { name }) {
            Owned::Opened(info) => info.handle,
            other => panic!("open {name}: {other:?}"),
        }
    }

    pub fn put(&mut self, c: usize, handle: Handle, item: &[u8], wait: Wait) -> u32 {
        self.send(c, Op::Put { handle, item, wait })
    }

    pub fn get(&mut self, c: usize, handle: Handle, wait: Wait) -> u32 {
        self.send(c, Op::Get { handle, wait })
    }

    /// The manager's statistics of the object at registry index `index`.
    pub fn stat(&self, index: u16) -> OwnedStat {
        let s = self.m.stat(index).expect("stat");
        match Owned::from_reply(&Reply::Stat(Some(s))) {
            Owned::Stat(Some(s)) => s,
            _ => unreachable!(),
        }
    }

    /// Client `c`'s socket closes (as if the process died): both ends see it.
    pub fn disconnect(&mut self, c: usize) {
        let now = self.now;
        let p = &mut self.peers[c];
        if let Some(conn) = p.conn.take() {
            self.m.handle_close(conn, now);
        }
        p.client.handle_close();
        for seen in drain_events(&mut p.client) {
            if let Seen::Closed(e) = seen {
                p.closed = Some(e);
            }
            p.log.push(seen);
        }
        self.pump();
    }

    pub fn closed(&self, c: usize) -> Option<Error> {
        self.peers[c].closed
    }
}

/// Collected replies, for assertions on order.
pub fn replies_in_order(log: &[Seen]) -> VecDeque<(u32, Owned)> {
    log.iter()
        .filter_map(|s| match s {
            Seen::Reply(id, r) => Some((*id, r.clone())),
            _ => None,
        })
        .collect()
}
