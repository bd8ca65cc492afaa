//! depot manager on an RP2040 + W5500: serves `task_queue` and `result_queue` (value queues)
//! on port 5000 to up to four clients at once: depot clients on hosts or other boards.
//! Set `AUTHKEY` for your deployment.
#![no_std]
#![no_main]

use defmt::info;
use depot_embassy::depot_core::queue::storage_for;
use depot_embassy::{ManagerResources, ObjectSlot, QueueMode, QueueSpec, Server, ServerConfig};
use depot_rp2040_w5500::{sockets, Rng};
use embassy_executor::Spawner;
use static_cell::StaticCell;
use {defmt_rtt as _, panic_probe as _};

const AUTHKEY: &[u8] = b"producer";
const PORT: u16 = 5000;
/// Connections served at once.
const SOCKETS: usize = 4;
const CAPACITY: usize = 64;
const MAX_ITEM: usize = 64;
const STORE: usize = storage_for(CAPACITY, MAX_ITEM);

static SERVER: StaticCell<ManagerResources<'static, SOCKETS>> = StaticCell::new();
static STORAGE: StaticCell<[[u8; STORE]; 2]> = StaticCell::new();
static OBJECTS: StaticCell<[ObjectSlot<'static>; 2]> = StaticCell::new();
static RNG: StaticCell<Rng> = StaticCell::new();

#[embassy_executor::main]
async fn main(spawner: Spawner) {
    let stack = depot_rp2040_w5500::start(spawner, sockets!(SOCKETS)).await;
    let spec = QueueSpec {
        capacity: CAPACITY as u32,
        max_item: MAX_ITEM as u32,
        mode: QueueMode::Value,
    };
    let [a, b] = STORAGE.init([[0; STORE]; 2]);
    let (Ok(task), Ok(result)) = (
        ObjectSlot::queue("task_queue", spec, a),
        ObjectSlot::queue("result_queue", spec, b),
    ) else {
        panic!("a queue does not fit its storage");
    };
    let mut server = Server::new(
        stack,
        ServerConfig::new(PORT),
        AUTHKEY,
        OBJECTS.init([task, result]),
        RNG.init(Rng),
        SERVER.init(ManagerResources::new()),
    );
    info!("depot manager listening on port {}", PORT);
    server.run().await;
}
