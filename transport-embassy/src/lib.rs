//! # depot-embassy
//!
//! depot (Python's `multiprocessing` managers, in Rust) over embassy-net, for firmware:
//! an async **client** whose queue `put`/`get` are `async fn`s, and an async **manager**
//! serving a fixed pool of TCP sockets. `#![no_std]`, no allocation, no `unsafe`. Every
//! protocol rule (handshake, MACs, limits, timeouts, blocked requests) is `depot-core`'s; this
//! crate only moves bytes between sockets and the core and keeps the clock (embassy-time).
//!
//! ## Client
//!
//! ```ignore
//! use depot_embassy::{Client, ClientBuffers, Wait};
//!
//! static BUFFERS: StaticCell<ClientBuffers> = StaticCell::new(); // 3 x 512 bytes, 2 slots
//! let (mut rx, mut tx) = ([0u8; 1024], [0u8; 1024]);
//! let socket = TcpSocket::new(stack, &mut rx, &mut tx);
//! let client = Client::connect(
//!     socket, (Ipv4Address::new(10, 0, 2, 100), 7777), b"producer", &mut rng,
//!     BUFFERS.init(ClientBuffers::new()),
//! ).await?;
//! let q = client.queue::<u32, 16>("task_queue").await?; // typed: items are values
//! q.put(&7, Wait::Forever).await?;                      // blocks while full
//! let item: u32 = q.get(Wait::Millis(500)).await?;      // Timeout after 500 ms
//! q.task_done().await?;
//! ```
//!
//! A wrong authkey fails `connect` with `Error::Depot(depot_core::Error::AuthFailed)`. A
//! client with a named key of its own (a manager's keys file, PROTOCOL.md §13) sets
//! `ClientConfig::key_name` (`depot_core::KeyName::new("sensor-7")`) in
//! [`Client::connect_with`].
//!
//! ## One client, many tasks
//!
//! Every method of [`Client`] and of the proxies takes `&self`, and the proxies are `Copy`: put
//! the client in a `static` and give each task a proxy. Their calls are pipelined on the one
//! connection (protocol version 2 lets any mix of blocked puts, gets and joins wait on one
//! connection), so a task blocked in `put` on a full queue does not hold up the `get` of
//! another task that makes room:
//!
//! ```ignore
//! static BUFFERS: StaticCell<ClientBuffers<512, 4>> = StaticCell::new(); // 3 tasks + 1
//! static CLIENT: StaticCell<Client<'static>> = StaticCell::new();
//! let client: &'static Client<'static> = CLIENT.init(Client::connect(/* .. */).await?);
//! let queue = client.queue_raw("task_queue").await?;
//! spawner.spawn(producer(queue).unwrap()); // each does queue.put(.., Wait::Forever)
//! spawner.spawn(producer(queue).unwrap());
//! spawner.spawn(consumer(queue).unwrap()); // queue.get_with(Wait::Forever, ..)
//! ```
//!
//! There is no background task: whichever call is being polled moves the socket's bytes,
//! keeps the replies of the other calls for them (small replies by value, an item in the
//! buffers' item buffer until its call takes it) and wakes them. The client is for one
//! executor on one core (a `RefCell` inside, not `Send`). Give it a slot per task that calls
//! it at once plus one (see [`ClientBuffers`]); a call beyond that waits for a slot.
//!
//! ## Cancel-safety
//!
//! A call's future may be dropped at any point, e.g. by `embassy_time::with_timeout`. Dropped
//! before its reply, the call is abandoned: depot-core withdraws it with `Cancel`, and if an
//! item was already on its way (the manager took it off the queue before the `Cancel`
//! reached it, or another task's call had already taken it in for this one), it goes back to
//! the head of its queue with `Return`. No item is lost or delivered twice; the next call on
//! the client sends what is left to send. A reply already in is not undone: a `put` dropped
//! after its `Done` arrived did put its item, as with any request whose answer is ignored.
//!
//! ## Reconnecting (feature `sessions`)
//!
//! `Client::connect_reconnecting` gives a client that comes back by itself. When its
//! connection is lost (the manager restarted, the link dropped), the next call, or the calls in
//! flight, dial again on the same socket with jittered exponential backoff, resume the
//! client's session (PROTOCOL.md §16) and make the calls again: puts are numbered, so the
//! manager applies a put sent twice once; gets, `qsize`, `join` and opening queues are simply
//! sent again; `task_done` and `shutdown` in flight fail (whether they counted cannot be told).
//! A call fails only when its own deadline passes: `Wait::Millis(ms)` after `ms`, any other
//! after `ReconnectPolicy::give_up_ms`.
//!
//! ```ignore
//! use depot_embassy::{Client, ReconnectPolicy, Wait};
//!
//! let policy = ReconnectPolicy {
//!     initial_ms: 50,              // first pause between attempts, doubled after each
//!     max_ms: 2_000,               // longest pause; each is drawn between half and all of it
//!     give_up_ms: Some(60_000),    // a call without its own deadline fails after this
//!     connect_timeout_ms: 5_000,   // each attempt: TCP, handshake and session
//! };
//! // `entropy` (`&'static mut dyn Entropy`) also picks the session id and the jitter.
//! let client = Client::connect_reconnecting(socket, endpoint, b"producer", entropy,
//!                                           BUFFERS.init(ClientBuffers::new()),
//!                                           ClientConfig::default(), policy).await?;
//! let q = client.queue::<u32, 8>("task_queue").await?;
//! q.put(&7, Wait::Forever).await?; // survives the manager's restart; applied once
//! ```
//!
//! `Client::has_session` tells whether the manager took the session. The manager
//! remembers sessions in memory: one restarted without them (depot-std's
//! `--data-dir` keeps items, not sessions) may apply a put that was in flight at its end twice,
//! at least once. A manager that keeps no sessions (built without them, or this crate's
//! [`Server`]) takes the client without one: a put in flight on a lost connection then fails.
//!
//! ## Manager
//!
//! ```ignore
//! use depot_embassy::{ManagerResources, ObjectSlot, QueueMode, QueueSpec, Server, ServerConfig};
//!
//! // 4 sockets (also 4 sockets in the stack's StackResources), 512-byte frames.
//! static RES: StaticCell<ManagerResources<'static, 4>> = StaticCell::new();
//! static STORE: StaticCell<[u8; 1024]> = StaticCell::new();
//! static OBJECTS: StaticCell<[ObjectSlot<'static>; 1]> = StaticCell::new();
//! // A value queue refuses items that are not one well-formed value; QueueMode::Raw takes any.
//! let spec = QueueSpec { capacity: 32, max_item: 64, mode: QueueMode::Value };
//! let objects = OBJECTS.init([ObjectSlot::queue("task_queue", spec, STORE.init([0; 1024]))?]);
//! let mut server = Server::new(stack, ServerConfig::new(5555), b"producer", objects,
//!                              RNG.init(rng), RES.init(ManagerResources::new()));
//! server.run().await; // returns after a (permitted) remote shutdown
//! ```
//!
//! [`Server::with_keyring`] takes named keys with their rights instead of one authkey, e.g. a
//! `static` `[depot_core::Key; N]` through `Keyring::new(&KEYS)`; the key named `""` is the
//! default key.
//!
//! ## Capacities (compile time)
//! - [`ClientBuffers<FRAME = 512, SLOTS = 2>`](ClientBuffers): frame and item buffers and calls
//!   in flight of one client.
//! - [`ManagerResources<SOCKETS, FRAME = 512, SOCKET_BUF = 1024, WAITERS = 16>`](ManagerResources):
//!   connections, per-connection frame buffers, TCP buffers and blocked requests.
//! - Queues: the `ObjectSlot`s and their storage are the application's (depot-core's types).
//! - Typed items: the `N` of [`Queue<T, N = 64>`](Queue), the scratch to encode one.
//!
//! ## Randomness
//! Nonces come from the application through [`Entropy`]; see its docs for boards with and
//! without a hardware RNG.
//!
//! ## Features
//! - `aead` (off by default): frames sealed with ChaCha20-Poly1305 when the peer agrees
//!   (PROTOCOL.md §5.1; about 4.2 KB of flash). Without it frames carry a MAC only
//!   (authenticated and in sequence, not secret), and a host that requires encryption refuses
//!   the connection with `EncryptionRequired`. A manager that must
//!   refuse clients that do not seal sets `ServerConfig::manager.encryption` to
//!   `Encryption::Required`; a client, `ClientConfig::encryption` in [`Client::connect_with`].
//! - `sessions`: the reconnecting client above, with depot-core's `sessions` (about 8.5 KB
//!   of flash in a client that uses it: fw-session-producer against fw-producer), and a
//!   [`Server`] that keeps sessions in the slots the app gives [`Server::serve_sessions`], so
//!   that a reconnecting client's puts are applied once. A server given no slots (or built
//!   without the feature) answers `Session` `NotAllowed`, and reconnecting clients of it carry
//!   on without a session.
//! - `keyring`, `throttle`, `leases`, `objects`, `create`: depot-core's optional manager
//!   capabilities (PROTOCOL.md §17), each off unless the firmware asks for it; `create` lets
//!   clients create queues in the manager's spare slots when `ServerConfig::manager` allows it
//!   (`allow_create`).
//! - `defmt`: `defmt::Format` on public types and logging through defmt.
//! - `log`: logging through `log`.
#![no_std]
#![deny(unsafe_code)]

#[macro_use]
mod fmt;

mod client;
mod entropy;
mod error;
mod queue;
#[cfg(feature = "sessions")]
mod resume;
mod server;
mod time;

pub use client::{Client, ClientBuffers};
pub use entropy::Entropy;
pub use error::{DecodeError, Error};
pub use queue::{Queue, RawQueue};
#[cfg(feature = "objects")]
pub use server::CallHandler;
pub use server::{ManagerResources, Server, ServerConfig, ServerHandle};

pub use depot_core;
#[cfg(feature = "sessions")]
pub use depot_core::reconnect::Policy as ReconnectPolicy;
#[cfg(feature = "sessions")]
pub use depot_core::session::SessionSlot;
pub use depot_core::wire::{ObjectInfo, QueueMode, QueueSpec, Wait};
pub use depot_core::{ManagerConfig, ObjectSlot};
