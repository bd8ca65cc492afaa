//! depot producer firmware that outlives its manager: puts `ITEMS` typed items (`1`..=`ITEMS`,
//! `u32` values, default 300) into `task_queue` on a host manager reached at 10.0.2.100:7777
//! (QEMU guestfwd), a few milliseconds apart, through a client that reconnects by itself and
//! resumes its session (depot-embassy's `sessions`). It prints its progress every 50 items, so
//! a test can kill and restart the manager mid-run, and exits 0 once every put has been
//! acknowledged; 1 on any error (a put fails only when its own deadline passes).
#![no_std]
#![no_main]

use depot_board::println;
use depot_embassy::{ReconnectPolicy, Wait};
use depot_firmware_apps::{connect_reconnecting, log, report, ClientMemory, AUTHKEY, QUEUE};
use embassy_executor::Spawner;
use embassy_net::Stack;
use embassy_time::{Duration, Timer};
use panic_semihosting as _;
use static_cell::StaticCell;

const NAME: &str = "fw-session-producer";
const DEADLINE: Duration = Duration::from_secs(90);
/// Items put (`DEPOT_FW_SESSION_ITEMS`, default 300).
const ITEMS: u32 = match option_env!("DEPOT_FW_SESSION_ITEMS") {
    Some(n) => depot_firmware_apps::parse_u32(n),
    None => 300,
};
/// The pause between puts: long enough that a restart lands mid-run.
const GAP: Duration = Duration::from_millis(10);
/// Progress is printed every this many items.
const EVERY: u32 = 50;
/// Fast first retries, at most half a second apart; a put gives up after 30 s without a
/// manager.
const POLICY: ReconnectPolicy = ReconnectPolicy {
    initial_ms: 50,
    max_ms: 500,
    give_up_ms: Some(30_000),
    connect_timeout_ms: 3_000,
};

static MEMORY: StaticCell<ClientMemory> = StaticCell::new();

#[embassy_executor::main(entry = "cortex_m_rt::entry", executor = "depot_board::Executor")]
async fn main(spawner: Spawner) {
    depot_board::run(spawner, depot_board::sockets!(1), NAME, DEADLINE, job).await
}

async fn job(stack: Stack<'static>) -> Result<(), &'static str> {
    let client = connect_reconnecting(stack, AUTHKEY, MEMORY.init(ClientMemory::new()), POLICY)
        .await
        .map_err(|e| report(NAME, "connect", e))?;
    log!("connected");
    let session = if client.has_session() { "yes" } else { "no" };
    println!("{}: session {}", NAME, session);
    let queue = client
        .queue::<u32, 8>(QUEUE)
        .await
        .map_err(|e| report(NAME, "open", e))?;
    for n in 1..=ITEMS {
        // Forever: the put waits for room, and for a manager until POLICY gives up.
        queue
            .put(&n, Wait::Forever)
            .await
            .map_err(|e| report(NAME, "put", e))?;
        if n % EVERY == 0 {
            println!("{}: put {}", NAME, n);
        }
        Timer::after(GAP).await;
    }
    println!("{}: put {} items into {}", NAME, ITEMS, QUEUE);
    client.close().await;
    Ok(())
}
