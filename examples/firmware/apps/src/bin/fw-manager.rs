//! depot manager firmware: serves four queues (`task_queue` and three more) on port 5555 over
//! a pool of four sockets; host producers and consumers reach it through QEMU's hostfwd.
//!
//! Completion rule: it runs until a client's `shutdown` request (remote shutdown is allowed
//! here), prints each queue's totals (`fw-manager: stat NAME put=P got=G len=L`) and exits 0;
//! exits 1 if no shutdown arrives within 90 s. Whether the right items went through is the
//! host's to judge from what its producer put and its consumer got.
//!
//! Built with the apps' `sessions` feature it also keeps [`SESSIONS`] clients' sessions, so a
//! reconnecting client's puts are applied once across its reconnects.
#![no_std]
#![no_main]

use depot_board::{net, println};
use depot_embassy::depot_core::queue::storage_for;
use depot_embassy::{ManagerResources, ObjectSlot, QueueMode, QueueSpec, Server, ServerConfig};
use depot_firmware_apps::entropy::TestEntropy;
use depot_firmware_apps::{log, AUTHKEY};
use embassy_executor::Spawner;
use embassy_net::Stack;
use embassy_time::Duration;
use panic_semihosting as _;
use static_cell::StaticCell;

const NAME: &str = "fw-manager";
const DEADLINE: Duration = Duration::from_secs(90);

/// Connections served at once.
const SOCKETS: usize = 4;
/// The largest item of every queue.
const MAX_ITEM: usize = 64;
/// `task_queue` holds this many items; the other queues a quarter of it.
const CAPACITY: usize = 32;
const MAIN_STORE: usize = storage_for(CAPACITY, MAX_ITEM);
const SMALL_STORE: usize = storage_for(CAPACITY / 4, MAX_ITEM);
const NAMES: [&str; 4] = ["task_queue", "result_queue", "log_queue", "spare_queue"];

static SERVER: StaticCell<ManagerResources<'static, SOCKETS>> = StaticCell::new();
static MAIN: StaticCell<[u8; MAIN_STORE]> = StaticCell::new();
static SMALL: StaticCell<[[u8; SMALL_STORE]; 3]> = StaticCell::new();
static OBJECTS: StaticCell<[ObjectSlot<'static>; 4]> = StaticCell::new();
static ENTROPY: StaticCell<TestEntropy> = StaticCell::new();
/// Sessions remembered at once (with `sessions`): one per socket.
#[cfg(feature = "sessions")]
const SESSIONS: usize = SOCKETS;
#[cfg(feature = "sessions")]
static SESSION_SLOTS: StaticCell<[depot_embassy::SessionSlot; SESSIONS]> = StaticCell::new();

#[embassy_executor::main(entry = "cortex_m_rt::entry", executor = "depot_board::Executor")]
async fn main(spawner: Spawner) {
    depot_board::run(spawner, depot_board::sockets!(SOCKETS), NAME, DEADLINE, job).await
}

fn objects() -> Result<&'static mut [ObjectSlot<'static>; 4], &'static str> {
    let [a, b, c] = SMALL.init([[0; SMALL_STORE]; 3]);
    let storage: [&'static mut [u8]; 4] = [MAIN.init([0; MAIN_STORE]), a, b, c];
    // Empty slots, each then replaced by its queue: one construction in a loop is smaller
    // firmware than four written out.
    let slots = OBJECTS.init(core::array::from_fn(|_| ObjectSlot::spare(&mut [][..])));
    for (i, (slot, storage)) in slots.iter_mut().zip(storage).enumerate() {
        let capacity = if i == 0 { CAPACITY } else { CAPACITY / 4 };
        let spec = QueueSpec {
            capacity: capacity as u32,
            max_item: MAX_ITEM as u32,
            // Items are values; anything else is refused with InvalidValue.
            mode: QueueMode::Value,
        };
        *slot = ObjectSlot::queue(NAMES[i], spec, storage)
            .map_err(|_| "a queue does not fit its storage")?;
    }
    Ok(slots)
}

async fn job(stack: Stack<'static>) -> Result<(), &'static str> {
    let mut config = ServerConfig::new(net::GUEST_PORT);
    config.manager.allow_remote_shutdown = true;
    let mut server = Server::new(
        stack,
        config,
        AUTHKEY,
        objects()?,
        ENTROPY.init(TestEntropy::from_board()),
        SERVER.init(ManagerResources::new()),
    );
    #[cfg(feature = "sessions")]
    server.serve_sessions(SESSION_SLOTS.init([depot_embassy::SessionSlot::EMPTY; SESSIONS]));
    println!("{}: listening on {}", NAME, net::GUEST_PORT);
    server.run().await;
    log!("manager stopped");
    let handle = server.handle();
    for index in 0..NAMES.len() as u16 {
        handle.inspect(|m| {
            if let Some(s) = m.stat(index) {
                println!(
                    "{}: stat {} put={} got={} len={}",
                    NAME, s.name, s.total_put, s.total_got, s.len
                );
            }
        });
    }
    Ok(())
}
