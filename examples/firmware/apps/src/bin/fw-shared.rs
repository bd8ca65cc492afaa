//! depot firmware with ONE client shared by three tasks: two producers put `1..=50` and
//! `51..=100` (as values) with blocking puts, and a consumer takes 100 items with blocking gets,
//! all on `task_queue` of a host manager at 10.0.2.100:7777 whose queue holds ONE item. A
//! blocked put must not hold up the get that makes room for it (nor the other put), so the
//! run only ends if the calls really share the connection. The consumer checks that every
//! item arrived exactly once (`fw-shared: got 100 items exactly once, sum 5050`) and that the
//! queue is empty; exits 0 then, 1 on any error or after 30 s.
#![no_std]
#![no_main]

use depot_board::println;
use depot_embassy::{Client, Queue, Wait};
use depot_firmware_apps::{connect_with, log, report, ClientMemory, AUTHKEY, QUEUE};
use embassy_executor::Spawner;
use embassy_net::Stack;
use embassy_sync::blocking_mutex::raw::CriticalSectionRawMutex;
use embassy_sync::channel::Channel;
use embassy_time::Duration;
use panic_semihosting as _;
use static_cell::StaticCell;

const NAME: &str = "fw-shared";
const DEADLINE: Duration = Duration::from_secs(30);
const PRODUCERS: u32 = 2;
const PER_PRODUCER: u32 = 50;
const TOTAL: u32 = PRODUCERS * PER_PRODUCER;

/// Three tasks calling at once, plus the slot kept for giving an item back.
static MEMORY: StaticCell<ClientMemory<4>> = StaticCell::new();
static CLIENT: StaticCell<Client<'static>> = StaticCell::new();
/// Each task's verdict.
static DONE: Channel<CriticalSectionRawMutex, Result<(), &'static str>, 3> = Channel::new();

#[embassy_executor::main(entry = "cortex_m_rt::entry", executor = "depot_board::Executor")]
async fn main(spawner: Spawner) {
    depot_board::run(spawner, depot_board::sockets!(1), NAME, DEADLINE, |stack| {
        job(spawner, stack)
    })
    .await
}

async fn job(spawner: Spawner, stack: Stack<'static>) -> Result<(), &'static str> {
    let client = connect_with(stack, AUTHKEY, MEMORY.init(ClientMemory::new()))
        .await
        .map_err(|e| report(NAME, "connect", e))?;
    let client: &'static Client<'static> = CLIENT.init(client);
    log!("connected");
    let queue = client
        .queue::<u32, 8>(QUEUE)
        .await
        .map_err(|e| report(NAME, "open", e))?;
    println!("{}: ready", NAME);
    spawner.spawn(consumer(queue).map_err(|_| "cannot spawn the consumer")?);
    for k in 0..PRODUCERS {
        spawner
            .spawn(producer(queue, k * PER_PRODUCER + 1).map_err(|_| "cannot spawn a producer")?);
    }
    let mut verdict = Ok(());
    for _ in 0..PRODUCERS + 1 {
        if let Err(e) = DONE.receive().await {
            verdict = Err(e);
        }
    }
    verdict?;
    let left = queue.qsize().await.map_err(|e| report(NAME, "qsize", e))?;
    if left != 0 {
        println!("{}: {} items left in the queue", NAME, left);
        return Err("items left in the queue");
    }
    client.close().await;
    Ok(())
}

/// Puts `first..first + PER_PRODUCER`, each waiting for room as long as it takes.
#[embassy_executor::task(pool_size = 2)]
async fn producer(queue: Numbers, first: u32) {
    let mut verdict = Ok(());
    for n in first..first + PER_PRODUCER {
        if let Err(e) = queue.put(&n, Wait::Forever).await {
            verdict = Err(report(NAME, "put", e));
            break;
        }
    }
    DONE.send(verdict).await;
}

/// Takes `TOTAL` items, each waiting as long as it takes, and checks each arrives once.
#[embassy_executor::task]
async fn consumer(queue: Numbers) {
    let verdict = consume(queue).await;
    DONE.send(verdict).await;
}

/// The queue, items as `u32` values.
type Numbers = Queue<'static, 'static, u32, 8>;

async fn consume(queue: Numbers) -> Result<(), &'static str> {
    let mut seen = [false; TOTAL as usize];
    let mut sum = 0u32;
    for _ in 0..TOTAL {
        let n = queue
            .get(Wait::Forever)
            .await
            .map_err(|e| report(NAME, "get", e))?;
        let Some(n) = Some(n).filter(|n| (1..=TOTAL).contains(n)) else {
            return Err("an item that was never put");
        };
        let seen = &mut seen[n as usize - 1];
        if *seen {
            println!("{}: item {} arrived twice", NAME, n);
            return Err("an item arrived twice");
        }
        *seen = true;
        sum += n;
    }
    println!("{}: got {} items exactly once, sum {}", NAME, TOTAL, sum);
    Ok(())
}
