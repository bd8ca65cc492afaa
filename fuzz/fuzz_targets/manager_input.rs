//! A sequence of operations over several connections, from the fuzz input: accepts, raw bytes,
//! authentic frames with arbitrary messages, valid requests from real clients, the clock,
//! partial transmits and closes, while a well-behaved control client keeps checking that it
//! is served correctly and the manager's invariants hold.
#![no_main]

use depot_core::client::ClientConfig;
use depot_core::wire::{Handle, Items, Op, QueueSpec, Reply, Wait};
use depot_core::*;
use depot_fuzz::*;
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

const CONNS: usize = 5;
const RX: usize = 600;
const TX: usize = 600;
const WAITERS: usize = 12;
const MAX_WAITERS_PER_CONN: u32 = 4;
const LEASE_SLOTS: usize = 4;

#[derive(Arbitrary, Debug)]
enum FWait {
    NoWait,
    Forever,
    Millis(u16),
}

impl FWait {
    fn wait(&self) -> Wait {
        match *self {
            FWait::NoWait => Wait::NoWait,
            FWait::Forever => Wait::Forever,
            FWait::Millis(ms) => Wait::Millis(ms.into()),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum FOp {
    Open(u8),
    Create {
        name: u8,
        capacity: u8,
        max_item: u8,
        exist_ok: bool,
    },
    Put {
        handle: u8,
        len: u8,
        wait: FWait,
    },
    Get {
        handle: u8,
        wait: FWait,
    },
    Size(u8),
    TaskDone(u8),
    Join {
        handle: u8,
        wait: FWait,
    },
    Stat(u8),
    Status,
    Shutdown,
    PutMany {
        handle: u8,
        /// Lengths of the items, packed from `ITEM`.
        lens: Vec<u8>,
        wait: FWait,
    },
    GetMany {
        handle: u8,
        max_items: u8,
        max_bytes: u16,
        wait: FWait,
    },
    /// Withdraw the request `back` sends ago (or a made-up id).
    Cancel {
        target: u32,
    },
    Return {
        handle: u8,
        len: u8,
    },
    GetLeased {
        handle: u8,
        max_items: u8,
        max_bytes: u16,
        lease_ms: u16,
        wait: FWait,
    },
    /// Ack the lease `index` leases ago that a client was granted (or a made-up id).
    Ack {
        index: u8,
        made_up: Option<u64>,
    },
    Nack {
        index: u8,
        made_up: Option<u64>,
    },
    BackendStatus,
}

#[derive(Arbitrary, Debug)]
enum Action {
    /// A raw connection (no handshake of its own).
    Accept,
    /// A real client that completes the handshake.
    Connect,
    /// A hand-made session whose frames the target seals itself.
    ConnectSealed,
    /// Arbitrary bytes into a connection.
    Raw {
        conn: u8,
        bytes: Vec<u8>,
    },
    /// Arbitrary message bytes in an authentic frame (sealed connections only).
    Sealed {
        conn: u8,
        body: Vec<u8>,
    },
    /// A valid request from a real client.
    Request {
        conn: u8,
        op: FOp,
    },
    /// A real client gives up on one of its requests (its latest, or a made-up id).
    Abandon {
        conn: u8,
        latest: bool,
        id: u32,
    },
    /// A connection's reader stops or starts taking the manager's output.
    SetReading {
        conn: u8,
        reading: bool,
    },
    /// Move at most `max` bytes of a connection's output.
    Drain {
        conn: u8,
        max: u16,
    },
    Advance {
        ms: u16,
    },
    Close {
        conn: u8,
    },
    /// The control client checks it is served correctly.
    Check,
}

#[allow(clippy::large_enum_variant)]
enum Kind<'a> {
    Raw,
    Client(Client<'a>),
    Sealed(Sealer),
}

struct Peer<'a> {
    id: ConnId,
    kind: Kind<'a>,
    reading: bool,
}

fn names(n: u8) -> &'static str {
    [
        "task_queue",
        "other",
        "",
        "new",
        "a-very-long-name-that-is-too-long-to-be-valid",
    ][n as usize % 5]
}

fn op<'a>(f: &FOp, item: &'static [u8], packed: &'a mut Vec<u8>, leases: &[u64]) -> Op<'a> {
    let lease = |index: u8, made_up: Option<u64>| match made_up {
        Some(id) => id,
        None if leases.is_empty() => 0,
        None => leases[leases.len() - 1 - index as usize % leases.len()],
    };
    let h = |x: u8| Handle::from_raw(u16::from(x % 5));
    match *f {
        FOp::Open(n) => Op::Open { name: names(n) },
        FOp::Create {
            name,
            capacity,
            max_item,
            exist_ok,
        } => Op::Create {
            name: names(name),
            spec: QueueSpec {
                capacity: capacity.into(),
                max_item: max_item.into(),
                mode: depot_core::QueueMode::Raw,
            },
            exist_ok,
        },
        FOp::Put {
            handle,
            len,
            ref wait,
        } => Op::Put {
            handle: h(handle),
            item: &item[..(len as usize).min(item.len())],
            wait: wait.wait(),
        },
        FOp::Get { handle, ref wait } => Op::Get {
            handle: h(handle),
            wait: wait.wait(),
        },
        FOp::Size(x) => Op::Size { handle: h(x) },
        FOp::TaskDone(x) => Op::TaskDone { handle: h(x) },
        FOp::Join { handle, ref wait } => Op::Join {
            handle: h(handle),
            wait: wait.wait(),
        },
        FOp::Stat(i) => Op::Stat { index: i.into() },
        FOp::Status => Op::Status,
        FOp::BackendStatus => Op::BackendStatus,
        FOp::Shutdown => Op::Shutdown,
        FOp::PutMany {
            handle,
            ref lens,
            ref wait,
        } => {
            packed.clear();
            for &len in lens.iter().take(32) {
                let at = packed.len();
                let item = &item[..(len as usize).min(item.len())];
                packed.resize(at + Items::packed_len(item.len()), 0);
                Items::push(packed, at, item);
            }
            Op::PutMany {
                handle: h(handle),
                items: Items(packed),
                wait: wait.wait(),
            }
        }
        FOp::GetMany {
            handle,
            max_items,
            max_bytes,
            ref wait,
        } => Op::GetMany {
            handle: h(handle),
            max_items: max_items.into(),
            max_bytes: max_bytes.into(),
            wait: wait.wait(),
        },
        FOp::Cancel { target } => Op::Cancel { target },
        FOp::Return { handle, len } => Op::Return {
            handle: h(handle),
            item: &item[..(len as usize).min(item.len())],
        },
        FOp::GetLeased {
            handle,
            max_items,
            max_bytes,
            lease_ms,
            ref wait,
        } => Op::GetLeased {
            handle: h(handle),
            max_items: max_items.into(),
            max_bytes: max_bytes.into(),
            lease_ms: lease_ms.into(),
            wait: wait.wait(),
        },
        FOp::Ack { index, made_up } => Op::Ack {
            lease: lease(index, made_up),
        },
        FOp::Nack { index, made_up } => Op::Nack {
            lease: lease(index, made_up),
        },
    }
}

static ITEM: [u8; 255] = [0x5A; 255];

fn new_client<'a>(
    key: &[u8],
    nonce: [u8; 32],
    now: Instant,
    rx: &'a mut [u8],
    tx: &'a mut [u8],
    slots: &'a mut [RequestSlot],
) -> Client<'a> {
    Client::new(ClientConfig::default(), key, nonce, now, rx, tx, slots)
}

/// Lease ids clients were granted, newest last.
static LEASES: std::sync::Mutex<Vec<u64>> = std::sync::Mutex::new(Vec::new());

/// Moves bytes between the manager and the real clients until nothing changes.
fn pump<'c>(m: &mut Manager<'_>, peers: &mut Vec<Peer<'c>>, control: &mut Peer<'c>, now: Instant) {
    for _ in 0..64 {
        let mut progress = false;
        while m.poll_ready().is_some() {}
        for p in peers.iter_mut().chain(std::iter::once(&mut *control)) {
            let pending = m.poll_transmit(p.id).len();
            assert!(
                pending <= TX,
                "transmit pending {pending} beyond its buffer"
            );
            if let Kind::Client(c) = &mut p.kind {
                let out = c.poll_transmit().to_vec();
                if !out.is_empty() {
                    let n = m.handle_input(p.id, now, &out);
                    c.handle_transmitted(n);
                    progress |= n > 0;
                }
                if p.reading {
                    let back = m.poll_transmit(p.id).to_vec();
                    let n = c.handle_input(&back);
                    m.handle_transmitted(p.id, now, n);
                    progress |= n > 0;
                }
                while let Some(ev) = c.poll_event() {
                    if let Event::Reply {
                        reply: Reply::Leased { lease, .. },
                        ..
                    } = ev
                    {
                        LEASES.lock().unwrap().push(lease);
                    }
                }
            } else if p.reading {
                let n = m.poll_transmit(p.id).len();
                m.handle_transmitted(p.id, now, n);
                progress |= n > 0;
            }
        }
        let before = peers.len();
        peers.retain(|p| {
            let closing = m.wants_close(p.id);
            if closing {
                m.handle_close(p.id, now);
            }
            !closing
        });
        progress |= peers.len() != before;
        if !progress {
            return;
        }
    }
}

fuzz_target!(|actions: Vec<Action>| {
    let (mut q0, mut q1, mut spare) = (vec![0u8; 400], vec![0u8; 200], vec![0u8; 300]);
    let mut objects = [
        ObjectSlot::queue(
            "task_queue",
            QueueSpec {
                capacity: 4,
                max_item: 100,
                mode: depot_core::QueueMode::Raw,
            },
            &mut q0[..],
        )
        .unwrap(),
        ObjectSlot::queue(
            "other",
            QueueSpec {
                capacity: 2,
                max_item: 40,
                mode: depot_core::QueueMode::Raw,
            },
            &mut q1[..],
        )
        .unwrap(),
        ObjectSlot::spare(&mut spare[..]),
    ];
    let mut bufs: Vec<(Vec<u8>, Vec<u8>)> =
        (0..CONNS).map(|_| (vec![0u8; RX], vec![0u8; TX])).collect();
    let mut conns: Vec<Connection<'_>> = bufs
        .iter_mut()
        .map(|(rx, tx)| Connection::new(&mut rx[..], &mut tx[..]))
        .collect();
    let mut park = vec![0u8; 4 * 110];
    let mut waiters = [Waiter::EMPTY; WAITERS];
    let config = ManagerConfig {
        max_frame: 1024,
        handshake_timeout_ms: 1_000,
        frame_timeout_ms: 500,
        write_stall_timeout_ms: 2_000,
        allow_remote_shutdown: false,
        allow_create: true,
        max_waiters_per_connection: MAX_WAITERS_PER_CONN,
        // Below the slot count, so floods of handshakes evict.
        max_handshaking: 3,
        max_handshaking_per_source: 0,
        throttle: Default::default(),
        // Real clients seal their frames; the crafted ones ask for MACed frames.
        encryption: Encryption::Preferred,
        prefer_aes_gcm: false,
    };
    let resources = Resources {
        objects: (&mut objects).into(),
        connections: (&mut conns[..]).into(),
        waiters: (&mut waiters).into(),
        parked: ParkStore::slots(&mut park[..], 110),
    };
    let mut m = Manager::new(config, KEY, resources);
    let mut lease_slots = [LeaseSlot::EMPTY; LEASE_SLOTS];
    let mut lease_bytes = vec![0u8; LEASE_SLOTS * 110];
    m.serve_leases(LeaseStore::new(
        &mut lease_slots[..],
        ParkStore::slots(&mut lease_bytes[..], 110),
    ));
    LEASES.lock().unwrap().clear();
    // The id of each peer's latest request, by position.
    let mut latest = [0u32; 64];
    let mut now = Instant::ZERO;
    let mut nonces = 0u8;
    let mut next_nonce = || {
        nonces = nonces.wrapping_add(1);
        [nonces; 32]
    };

    // Client buffers live as long as the manager; a pool reused round-robin.
    let mut client_bufs: Vec<(Vec<u8>, Vec<u8>, [RequestSlot; 8])> = (0..CONNS + 1)
        .map(|_| (vec![0u8; 1024], vec![0u8; 1024], [RequestSlot::FREE; 8]))
        .collect();
    let mut client_bufs = client_bufs.iter_mut();

    // The control client.
    let (crx, ctx, cslots) = client_bufs.next().unwrap();
    let control_id = m.accept(now, next_nonce(), &[]).unwrap();
    let client = new_client(KEY, next_nonce(), now, crx, ctx, cslots);
    let mut control = Peer {
        id: control_id,
        kind: Kind::Client(client),
        reading: true,
    };
    let mut peers: Vec<Peer<'_>> = Vec::new();
    pump(&mut m, &mut peers, &mut control, now);
    let Kind::Client(cc) = &control.kind else {
        unreachable!()
    };
    assert!(cc.is_ready());

    for action in actions.iter().take(200) {
        match action {
            Action::Accept => {
                if let Ok(id) = m.accept(now, next_nonce(), &[]) {
                    peers.push(Peer {
                        id,
                        kind: Kind::Raw,
                        reading: true,
                    });
                }
            }
            Action::Connect => {
                let Ok(id) = m.accept(now, next_nonce(), &[]) else {
                    continue;
                };
                let Some((rx, tx, slots)) = client_bufs.next() else {
                    m.handle_close(id, now);
                    continue;
                };
                let client = new_client(KEY, next_nonce(), now, rx, tx, slots);
                peers.push(Peer {
                    id,
                    kind: Kind::Client(client),
                    reading: true,
                });
            }
            Action::ConnectSealed => {
                let mn = next_nonce();
                let Ok(id) = m.accept(now, mn, &[]) else {
                    continue;
                };
                let cn = next_nonce();
                let hello = hello_frame(&cn, 1024);
                m.handle_input(id, now, &hello);
                let challenge = m.poll_transmit(id).to_vec();
                m.handle_transmitted(id, now, challenge.len());
                let transcript = transcript(&hello, &challenge);
                let mut proof = derive(b"depot/1 client proof", &transcript).to_vec();
                proof.splice(0..0, [0u8, 0, 0, 32]);
                m.handle_input(id, now, &proof);
                let n = m.poll_transmit(id).len();
                m.handle_transmitted(id, now, n);
                assert!(
                    m.close_reason(id).is_none(),
                    "a valid sealed handshake failed"
                );
                peers.push(Peer {
                    id,
                    kind: Kind::Sealed(Sealer::client_to_manager(&transcript)),
                    reading: true,
                });
            }
            Action::Raw { conn, bytes } => {
                if let Some(p) = peers.get(*conn as usize % peers.len().max(1)) {
                    m.handle_input(p.id, now, bytes);
                }
            }
            Action::Sealed { conn, body } => {
                let n = peers.len().max(1);
                if let Some(p) = peers.get_mut(*conn as usize % n) {
                    if let Kind::Sealed(s) = &mut p.kind {
                        let frame = s.seal(body);
                        m.handle_input(p.id, now, &frame);
                    }
                }
            }
            Action::Request { conn, op: f } => {
                let n = peers.len().max(1);
                if let Some(Peer {
                    kind: Kind::Client(c),
                    ..
                }) = peers.get_mut(*conn as usize % n)
                {
                    let mut packed = Vec::new();
                    let leases = LEASES.lock().unwrap().clone();
                    if let (Ok(id), Some(slot)) = (
                        c.send(now, op(f, &ITEM, &mut packed, &leases)),
                        latest.get_mut(*conn as usize % n),
                    ) {
                        *slot = id;
                    }
                }
            }
            Action::Abandon {
                conn,
                latest: use_latest,
                id,
            } => {
                let n = peers.len().max(1);
                let k = *conn as usize % n;
                if let Some(Peer {
                    kind: Kind::Client(c),
                    ..
                }) = peers.get_mut(k)
                {
                    let latest = latest.get(k).copied().unwrap_or(0);
                    c.abandon(if *use_latest { latest } else { *id });
                }
            }
            Action::SetReading { conn, reading } => {
                let n = peers.len().max(1);
                if let Some(p) = peers.get_mut(*conn as usize % n) {
                    p.reading = *reading;
                }
            }
            Action::Drain { conn, max } => {
                if let Some(p) = peers.get(*conn as usize % peers.len().max(1)) {
                    let n = m.poll_transmit(p.id).len().min(*max as usize);
                    m.handle_transmitted(p.id, now, n);
                }
            }
            Action::Advance { ms } => {
                now = now.add_millis((*ms).into());
                if m.poll_timeout().is_some_and(|t| t <= now) {
                    m.handle_timeout(now);
                }
                for p in peers.iter_mut() {
                    if let Kind::Client(c) = &mut p.kind {
                        c.handle_timeout(now);
                    }
                }
            }
            Action::Close { conn } => {
                let n = peers.len().max(1);
                if (*conn as usize % n) < peers.len() {
                    let p = peers.remove(*conn as usize % n);
                    m.handle_close(p.id, now);
                }
            }
            Action::Check => {
                control_check(&mut m, &mut peers, &mut control, now);
            }
        }
        pump(&mut m, &mut peers, &mut control, now);
        invariants(&m, &peers);
    }
    control_check(&mut m, &mut peers, &mut control, now);
    // Every lease ends with its connection.
    for p in peers.drain(..) {
        m.handle_close(p.id, now);
    }
    assert_eq!(m.leases().leased(), 0, "leases outlived their connections");
});

fn invariants(m: &Manager<'_>, peers: &[Peer<'_>]) {
    let status = m.status();
    assert_eq!(
        status.connections as usize,
        peers.len() + 1,
        "connection count"
    );
    assert!(status.waiters as usize <= WAITERS);
    assert!(m.leases().leased() as usize <= LEASE_SLOTS);
    assert!(status.waiters <= MAX_WAITERS_PER_CONN * (peers.len() as u32 + 1));
    let mut parked = 0;
    let mut i = 0;
    while let Some(s) = m.stat(i) {
        parked += s.getters + s.putters + s.joiners;
        // Items put back (`Return`, a lease that ended) may go beyond `capacity`, never
        // beyond the storage.
        assert!(s.bytes <= s.storage);
        assert!(s.total_got <= s.total_put);
        i += 1;
    }
    assert_eq!(parked, status.waiters, "waiters counted twice or lost");
}

/// The control client asks for things whose answers it knows, and must get them at once.
fn control_check<'c>(
    m: &mut Manager<'_>,
    peers: &mut Vec<Peer<'c>>,
    control: &mut Peer<'c>,
    now: Instant,
) {
    let Kind::Client(c) = &mut control.kind else {
        unreachable!()
    };
    assert!(c.is_ready(), "control client lost: {:?}", c.error());
    assert_eq!(c.in_flight(), 0, "control requests unanswered");
    let ids = [
        c.send(now, Op::Open { name: "task_queue" }).unwrap(),
        c.send(now, Op::Stat { index: 0 }).unwrap(),
        c.send(now, Op::Status).unwrap(),
        c.send(
            now,
            Op::Size {
                handle: Handle::from_raw(0),
            },
        )
        .unwrap(),
        c.send(now, Op::BackendStatus).unwrap(),
    ];
    let out = c.poll_transmit().to_vec();
    c.handle_transmitted(out.len());
    assert_eq!(m.handle_input(control.id, now, &out), out.len());
    let back = m.poll_transmit(control.id).to_vec();
    m.handle_transmitted(control.id, now, back.len());
    assert_eq!(c.handle_input(&back), back.len());
    let mut seen = 0;
    while let Some(ev) = c.poll_event() {
        let Event::Reply { id, reply } = ev else {
            panic!("control: {ev:?}")
        };
        match reply {
            Reply::Opened(info) => {
                assert_eq!(id, ids[0]);
                assert_eq!(info.handle, Handle::from_raw(0));
                assert_eq!(
                    info.spec,
                    QueueSpec {
                        capacity: 4,
                        max_item: 100,
                        mode: depot_core::QueueMode::Raw,
                    }
                );
            }
            Reply::Stat(Some(s)) => {
                assert_eq!(id, ids[1]);
                assert_eq!(s.name, "task_queue");
            }
            Reply::Status(s) => {
                assert_eq!(id, ids[2]);
                assert_eq!(s.connections as usize, peers.len() + 1);
            }
            Reply::Size(s) => {
                assert_eq!(id, ids[3]);
                assert_eq!(s.capacity, 4);
                assert!(s.len <= 4);
            }
            // This manager keeps its queues itself.
            Reply::Backend(health) => {
                assert_eq!(id, ids[4]);
                assert_eq!(health, None);
            }
            other => panic!("control: unexpected {other:?}"),
        }
        seen += 1;
    }
    assert_eq!(seen, 5, "control replies missing");
    pump(m, peers, control, now);
}
