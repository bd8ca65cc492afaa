//! depot manager firmware guarded by a static keyring instead of one authkey: serves
//! `task_queue` on port 5555 (QEMU hostfwd) to two keys, the default one (`AUTHKEY`, every
//! right: what the host's consumer and `depot shutdown` use) and `sensor-7`
//! (`sensor-7-secret-key`), which may only put to `task_queue`.
//!
//! Completion rule: it runs until a client's `shutdown` request, prints the queue's totals
//! (`fw-keyring-manager: stat NAME put=P got=G len=L`) and exits 0; exits 1 if no shutdown
//! arrives within 90 s. What each key was allowed is the host's to judge.
#![no_std]
#![no_main]

use depot_board::{net, println};
use depot_embassy::depot_core::queue::storage_for;
use depot_embassy::depot_core::{Grant, Key, Keyring, Rights};
use depot_embassy::{ManagerResources, ObjectSlot, QueueMode, QueueSpec, Server, ServerConfig};
use depot_firmware_apps::entropy::TestEntropy;
use depot_firmware_apps::{AUTHKEY, QUEUE};
use embassy_executor::Spawner;
use embassy_net::Stack;
use embassy_time::Duration;
use panic_semihosting as _;
use static_cell::StaticCell;

const NAME: &str = "fw-keyring-manager";
const DEADLINE: Duration = Duration::from_secs(90);

const SOCKETS: usize = 2;
const MAX_ITEM: usize = 64;
const CAPACITY: usize = 32;
const STORE: usize = storage_for(CAPACITY, MAX_ITEM);

/// The default key may do anything; `sensor-7` may only put to the queue.
static ADMIN: [Grant<'static>; 1] = [Grant::prefix("", Rights::ALL)];
static SENSOR: [Grant<'static>; 1] = [Grant::exact(QUEUE, Rights::PUT)];
static KEYS: [Key<'static>; 2] = [
    Key::new("", AUTHKEY, &ADMIN),
    Key::new("sensor-7", b"sensor-7-secret-key", &SENSOR),
];

static SERVER: StaticCell<ManagerResources<'static, SOCKETS>> = StaticCell::new();
static STORAGE: StaticCell<[u8; STORE]> = StaticCell::new();
static OBJECTS: StaticCell<[ObjectSlot<'static>; 1]> = StaticCell::new();
static ENTROPY: StaticCell<TestEntropy> = StaticCell::new();

#[embassy_executor::main(entry = "cortex_m_rt::entry", executor = "depot_board::Executor")]
async fn main(spawner: Spawner) {
    depot_board::run(spawner, depot_board::sockets!(SOCKETS), NAME, DEADLINE, job).await
}

async fn job(stack: Stack<'static>) -> Result<(), &'static str> {
    let spec = QueueSpec {
        capacity: CAPACITY as u32,
        max_item: MAX_ITEM as u32,
        mode: QueueMode::Value,
    };
    let slot = ObjectSlot::queue(QUEUE, spec, STORAGE.init([0; STORE]))
        .map_err(|_| "the queue does not fit its storage")?;
    let mut config = ServerConfig::new(net::GUEST_PORT);
    config.manager.allow_remote_shutdown = true;
    let mut server = Server::with_keyring(
        stack,
        config,
        Keyring::new(&KEYS),
        OBJECTS.init([slot]),
        ENTROPY.init(TestEntropy::from_board()),
        SERVER.init(ManagerResources::new()),
    )
    .map_err(|_| "bad keyring")?;
    println!("{}: listening on {}", NAME, net::GUEST_PORT);
    server.run().await;
    server.handle().inspect(|m| {
        if let Some(s) = m.stat(0) {
            println!(
                "{}: stat {} put={} got={} len={}",
                NAME, s.name, s.total_put, s.total_got, s.len
            );
        }
    });
    Ok(())
}
