//! depot producer firmware: puts `ITEMS` typed items (`1`..=`ITEMS`, `u32` values) into `task_queue` on
//! a host manager reached at 10.0.2.100:7777 (QEMU guestfwd), then exits 0; exits 1 on any
//! error or after 30 s. The host's consumer checks that every item arrived exactly once.
#![no_std]
#![no_main]

use depot_board::println;
use depot_embassy::Wait;
use depot_firmware_apps::{connect, log, report, AUTHKEY, ITEMS, QUEUE};
use embassy_executor::Spawner;
use embassy_net::Stack;
use embassy_time::Duration;
use panic_semihosting as _;

const NAME: &str = "fw-producer";
const DEADLINE: Duration = Duration::from_secs(30);
/// A put may wait this long for room (the host consumer may start after us).
const PUT_WAIT: Wait = Wait::Millis(10_000);

#[embassy_executor::main(entry = "cortex_m_rt::entry", executor = "depot_board::Executor")]
async fn main(spawner: Spawner) {
    depot_board::run(spawner, depot_board::sockets!(1), NAME, DEADLINE, job).await
}

async fn job(stack: Stack<'static>) -> Result<(), &'static str> {
    let client = connect(stack, AUTHKEY)
        .await
        .map_err(|e| report(NAME, "connect", e))?;
    log!("connected");
    let queue = client
        .queue::<u32, 8>(QUEUE)
        .await
        .map_err(|e| report(NAME, "open", e))?;
    for n in 1..=ITEMS {
        queue
            .put(&n, PUT_WAIT)
            .await
            .map_err(|e| report(NAME, "put", e))?;
    }
    println!("{}: put {} items into {}", NAME, ITEMS, QUEUE);
    client.close().await;
    Ok(())
}
