//! depot consumer firmware: gets `ITEMS` items from `task_queue` on a host manager reached at
//! 10.0.2.100:7777 (QEMU guestfwd), each `get` waiting up to 15 s, and prints each as
//! `fw-consumer: item N` (typed `u32` items); then a `get` with a 500 ms timeout on the now-empty queue must
//! fail with `Timeout` (and a non-blocking one with `Empty`). Exits 0 when all of it holds,
//! 1 otherwise or after 40 s.
#![no_std]
#![no_main]

use depot_board::println;
use depot_embassy::depot_core::Error as DepotError;
use depot_embassy::{Error, Wait};
use depot_firmware_apps::{connect, log, report, AUTHKEY, ITEMS, QUEUE};
use embassy_executor::Spawner;
use embassy_net::Stack;
use embassy_time::{Duration, Instant};
use panic_semihosting as _;

const NAME: &str = "fw-consumer";
const DEADLINE: Duration = Duration::from_secs(40);
/// The host producer may start after us: each get blocks this long at most.
const GET_WAIT: Wait = Wait::Millis(15_000);
/// The final get on the empty queue.
const EMPTY_WAIT_MS: u32 = 500;

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
    println!("{}: ready", NAME);
    for _ in 0..ITEMS {
        let n = queue
            .get(GET_WAIT)
            .await
            .map_err(|e| report(NAME, "get", e))?;
        println!("{}: item {}", NAME, n);
    }

    // The queue is empty now: a bounded get must time out, after waiting.
    let start = Instant::now();
    let outcome = queue
        .raw()
        .get_with(Wait::Millis(EMPTY_WAIT_MS), |_| Ok(()))
        .await;
    let waited = start.elapsed().as_millis();
    match outcome {
        // The manager keeps the time, on another clock (the host's, or another guest's,
        // which QEMU runs 10-20 % off wall time): only check that the get did wait.
        Err(Error::Depot(DepotError::Timeout)) if waited >= u64::from(EMPTY_WAIT_MS / 2) => {
            println!("{}: empty queue: Timeout after {} ms", NAME, waited);
        }
        Err(e) => {
            println!(
                "{}: empty queue: expected Timeout, got {} after {} ms",
                NAME, e, waited
            );
            return Err("the get on the empty queue did not time out");
        }
        Ok(()) => {
            println!("{}: empty queue: expected Timeout, got an item", NAME);
            return Err("the get on the empty queue did not time out");
        }
    }
    match queue.raw().get_with(Wait::NoWait, |_| Ok(())).await {
        Err(Error::Depot(DepotError::Empty)) => println!("{}: empty queue: Empty at once", NAME),
        Err(e) => {
            println!("{}: empty queue: expected Empty, got {}", NAME, e);
            return Err("the non-blocking get on the empty queue was not Empty");
        }
        Ok(()) => {
            println!("{}: empty queue: expected Empty, got an item", NAME);
            return Err("the non-blocking get on the empty queue was not Empty");
        }
    }
    client.close().await;
    Ok(())
}
