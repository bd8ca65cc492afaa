//! What the depot firmware apps share: build-time settings, [`connect`] to the host's manager
//! and test entropy. Items are typed `u32` values (the value model), so the host's
//! `depot put 3` / `depot get` speak to them.
//!
//! Settings are baked in when the firmware is built, from environment variables read by
//! `option_env!` (defaults in brackets): `DEPOT_FW_AUTHKEY` [`producer`], `DEPOT_FW_ITEMS`
//! [`20`], `DEPOT_FW_QUEUE` [`task_queue`]. The ports are fixed by the QEMU set-up in
//! `depot_board::net` (the host at 10.0.2.100:7777 through guestfwd, the guest's 5555
//! through hostfwd).
#![no_std]

pub mod entropy;

#[cfg(feature = "defmt")]
use defmt_semihosting as _;

use core::future::Future;

use depot_board::net;
use depot_embassy::depot_core::client::ClientConfig;
use depot_embassy::{Client, ClientBuffers};
use embassy_net::tcp::TcpSocket;
use embassy_net::Stack;
use static_cell::StaticCell;

use entropy::TestEntropy;

/// The authkey shared with the host side of the test.
pub const AUTHKEY: &[u8] = match option_env!("DEPOT_FW_AUTHKEY") {
    Some(key) => key.as_bytes(),
    None => b"producer",
};

/// Items a producer puts and a consumer expects.
pub const ITEMS: u32 = match option_env!("DEPOT_FW_ITEMS") {
    Some(n) => parse_u32(n),
    None => 20,
};

/// The queue the apps use.
pub const QUEUE: &str = match option_env!("DEPOT_FW_QUEUE") {
    Some(name) => name,
    None => "task_queue",
};

/// A decimal `u32` at compile time; a bad digit fails the build.
pub const fn parse_u32(text: &str) -> u32 {
    let bytes = text.as_bytes();
    let mut value = 0u32;
    let mut i = 0;
    while i < bytes.len() {
        assert!(
            bytes[i].is_ascii_digit(),
            "DEPOT_FW_ITEMS must be a decimal number"
        );
        value = value * 10 + (bytes[i] - b'0') as u32;
        i += 1;
    }
    value
}

/// Logs through defmt with the `defmt` feature, else compiles to nothing.
#[macro_export]
macro_rules! log {
    ($($arg:tt)*) => {{
        #[cfg(feature = "defmt")]
        ::defmt::info!($($arg)*);
    }};
}

/// Prints `NAME: WHAT: ERROR` over semihosting and returns `WHAT`, the job's failure reason:
/// `.map_err(|e| report(NAME, "connect", e))?`.
pub fn report(name: &str, what: &'static str, error: depot_embassy::Error) -> &'static str {
    depot_board::println!("{}: {}: {}", name, what, error);
    what
}

/// What a client borrows for as long as it lives: the TCP socket's windows and depot's frames
/// (and the entropy of its handshake, for as long as that lasts). `SLOTS` is the client's
/// calls in flight at once (see `ClientBuffers`).
pub struct ClientMemory<const SLOTS: usize = 2> {
    rx: [u8; 1024],
    tx: [u8; 1024],
    buffers: ClientBuffers<512, SLOTS>,
    entropy: TestEntropy,
}

impl<const SLOTS: usize> ClientMemory<SLOTS> {
    /// Zeroed buffers; the entropy is seeded when [`connect_with`] uses them.
    pub const fn new() -> Self {
        ClientMemory {
            rx: [0; 1024],
            tx: [0; 1024],
            buffers: ClientBuffers::new(),
            entropy: TestEntropy::UNSEEDED,
        }
    }
}

impl<const SLOTS: usize> Default for ClientMemory<SLOTS> {
    fn default() -> Self {
        Self::new()
    }
}

static CLIENT_MEMORY: StaticCell<ClientMemory> = StaticCell::new();

/// Connects to the host's manager (10.0.2.100:7777 through QEMU's guestfwd) with `authkey`,
/// like the seed's `Client::connect(addr, authkey)`. Its memory is a `static`: call it once.
pub fn connect<'k>(
    stack: Stack<'static>,
    authkey: &'k [u8],
) -> impl Future<Output = Result<Client<'static>, depot_embassy::Error>> + 'k {
    connect_with(stack, authkey, CLIENT_MEMORY.init(ClientMemory::new()))
}

/// [`connect`] in memory of the caller's, for a client with more slots than the default two.
pub fn connect_with<'k, const SLOTS: usize>(
    stack: Stack<'static>,
    authkey: &'k [u8],
    memory: &'static mut ClientMemory<SLOTS>,
) -> impl Future<Output = Result<Client<'static>, depot_embassy::Error>> + 'k {
    memory.entropy = TestEntropy::from_board();
    let socket = TcpSocket::new(stack, &mut memory.rx, &mut memory.tx);
    // The client's own future, not a wrapper around it: one state machine less in every app.
    Client::connect(
        socket,
        (net::HOST, net::HOST_PORT),
        authkey,
        &mut memory.entropy,
        &mut memory.buffers,
    )
}

/// [`connect_with`] with the core's client settings, e.g. a named key (`config.key_name`).
pub fn connect_config<'k, const SLOTS: usize>(
    stack: Stack<'static>,
    authkey: &'k [u8],
    memory: &'static mut ClientMemory<SLOTS>,
    config: ClientConfig,
) -> impl Future<Output = Result<Client<'static>, depot_embassy::Error>> + 'k {
    memory.entropy = TestEntropy::from_board();
    let socket = TcpSocket::new(stack, &mut memory.rx, &mut memory.tx);
    Client::connect_with(
        socket,
        (net::HOST, net::HOST_PORT),
        authkey,
        &mut memory.entropy,
        &mut memory.buffers,
        config,
    )
}

/// [`connect_config`] for a client that reconnects by itself with `policy`, resuming its
/// session (feature `sessions`; see `Client::connect_reconnecting`).
#[cfg(feature = "sessions")]
pub fn connect_reconnecting<'k, const SLOTS: usize>(
    stack: Stack<'static>,
    authkey: &'k [u8],
    memory: &'static mut ClientMemory<SLOTS>,
    policy: depot_embassy::ReconnectPolicy,
) -> impl Future<Output = Result<Client<'static>, depot_embassy::Error>> + 'k {
    memory.entropy = TestEntropy::from_board();
    let socket = TcpSocket::new(stack, &mut memory.rx, &mut memory.tx);
    Client::connect_reconnecting(
        socket,
        (net::HOST, net::HOST_PORT),
        authkey,
        &mut memory.entropy,
        &mut memory.buffers,
        ClientConfig::default(),
        policy,
    )
}
