//! depot consumer firmware whose gets give up early: each `get` on `task_queue` (host manager
//! at 10.0.2.100:7777) runs under `embassy_time::with_timeout` with a short timeout (1 to 23
//! ms, varied), while the host puts 200 items a few milliseconds apart, so items keep arriving
//! just as a timeout fires. Every other get also asks the manager to wait only as long
//! (`Wait::Millis`, the local timeout 0-2 ms later), so the manager's timeout races the local
//! one too. A dropped get is withdrawn, and an item already on its way goes back to the head
//! of the queue: in the end every item must arrive exactly once (`fw-canceller: got 200 items
//! exactly once, sum 20100`), and a last get finds the queue empty. Prints how many gets were
//! abandoned. Exits 0 then, 1 on any error or after 40 s.
#![no_std]
#![no_main]

use core::pin::pin;

use depot_board::{net, println};
use depot_embassy::depot_core::Error as DepotError;
use depot_embassy::{Error, Wait};
use depot_firmware_apps::{connect, item, log, report, AUTHKEY, QUEUE};
use embassy_executor::Spawner;
use embassy_net::{Stack, StackResources};
use embassy_time::{with_timeout, Duration};
use panic_semihosting as _;
use static_cell::StaticCell;

const NAME: &str = "fw-canceller";
const DEADLINE: Duration = Duration::from_secs(40);
/// Items the host puts (`1..=TOTAL`).
const TOTAL: u32 = 200;
/// The last get, on what must be an empty queue.
const EMPTY_WAIT_MS: u32 = 500;

static RESOURCES: StaticCell<StackResources<2>> = StaticCell::new();

#[embassy_executor::main(entry = "cortex_m_rt::entry", executor = "depot_board::Executor")]
async fn main(spawner: Spawner) {
    let stack = depot_board::start(spawner, RESOURCES.init(StackResources::new()));
    depot_board::run(NAME, DEADLINE, pin!(job(stack))).await
}

async fn job(stack: Stack<'static>) -> Result<(), &'static str> {
    net::up(stack).await?;
    let client = connect(stack, AUTHKEY)
        .await
        .map_err(|e| report(NAME, "connect", e))?;
    log!("connected");
    let queue = client
        .queue_raw(QUEUE)
        .await
        .map_err(|e| report(NAME, "open", e))?;
    println!("{}: ready", NAME);
    let mut seen = [false; TOTAL as usize];
    let (mut got, mut sum) = (0u32, 0u32);
    // Gets dropped by their local timeout: all of them, and those while items were flowing.
    let (mut abandoned, mut abandoned_in_flow) = (0u32, 0u32);
    let mut manager_timeouts = 0u32;
    let mut attempt = 0u32;
    while got < TOTAL {
        let ms = 1 + (attempt * 7) % 23;
        // Every other get: the manager's timeout, 0-2 ms before the local one.
        let (wait, local_ms) = if attempt.is_multiple_of(2) {
            (Wait::Forever, ms)
        } else {
            (Wait::Millis(ms), ms + attempt % 3)
        };
        attempt += 1;
        let get = queue.get_with(wait, |bytes| Ok(item::number(bytes)));
        match with_timeout(Duration::from_millis(local_ms.into()), get).await {
            Ok(Ok(n)) => {
                let Some(n) = n.filter(|n| (1..=TOTAL).contains(n)) else {
                    return Err("an item that was never put");
                };
                let seen = &mut seen[n as usize - 1];
                if *seen {
                    println!("{}: item {} arrived twice", NAME, n);
                    return Err("an item arrived twice");
                }
                *seen = true;
                got += 1;
                sum += n;
            }
            Ok(Err(Error::Depot(DepotError::Timeout))) => manager_timeouts += 1,
            Ok(Err(e)) => return Err(report(NAME, "get", e)),
            Err(_) => {
                abandoned += 1;
                if got > 0 {
                    abandoned_in_flow += 1;
                }
            }
        }
    }
    println!(
        "{}: got {} items exactly once, sum {}; {} gets abandoned ({} while items flowed), {} timed out at the manager",
        NAME, got, sum, abandoned, abandoned_in_flow, manager_timeouts
    );
    // Nothing left behind: no item came back twice, none is still on its way.
    match queue
        .get_with(Wait::Millis(EMPTY_WAIT_MS), |bytes| Ok(item::number(bytes)))
        .await
    {
        Err(Error::Depot(DepotError::Timeout)) => println!("{}: queue empty", NAME),
        Ok(n) => {
            println!("{}: an extra item {:?} after all {}", NAME, n, TOTAL);
            return Err("an item arrived after all were received");
        }
        Err(e) => return Err(report(NAME, "last get", e)),
    }
    client.close().await;
    Ok(())
}
