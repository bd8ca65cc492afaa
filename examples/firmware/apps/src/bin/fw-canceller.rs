//! depot consumer firmware whose gets give up early: two tasks share one client and take items
//! from `task_queue` (host manager at 10.0.2.100:7777), each get limited to a short time (1 to
//! 23 ms, varied), while the host puts 200 items a few milliseconds apart, so items keep
//! arriving just as a get gives up. One task runs its gets under `embassy_time::with_timeout`
//! (the get is polled first); the other checks its timer before its get, so a get whose item
//! the other task's call already took in can still be dropped. Every other get also asks the
//! manager to wait only as long (`Wait::Millis`, the local limit 0-2 ms later), so the
//! manager's timeout races the local one too. A dropped get is withdrawn, and an item already
//! on its way goes back to the head of the queue: in the end every item must arrive exactly
//! once (`fw-canceller: got 200 items exactly once, sum 20100`), and a last get finds the
//! queue empty. Prints how many gets were abandoned. Exits 0 then, 1 on any error or after
//! 30 s.
#![no_std]
#![no_main]

use core::cell::RefCell;
use core::future::{poll_fn, Future};
use core::pin::pin;
use core::task::Poll;

use depot_board::println;
use depot_embassy::depot_core::Error as DepotError;
use depot_embassy::{Client, Error, Queue, Wait};
use depot_firmware_apps::{connect_with, log, report, ClientMemory, AUTHKEY, QUEUE};
use embassy_executor::Spawner;
use embassy_net::Stack;
use embassy_sync::blocking_mutex::raw::CriticalSectionRawMutex;
use embassy_sync::blocking_mutex::Mutex;
use embassy_sync::channel::Channel;
use embassy_time::{with_timeout, Duration, Timer};
use panic_semihosting as _;
use static_cell::StaticCell;

const NAME: &str = "fw-canceller";
const DEADLINE: Duration = Duration::from_secs(30);
/// Items the host puts (`1..=TOTAL`).
const TOTAL: u32 = 200;
/// The last get, on what must be an empty queue.
const EMPTY_WAIT_MS: u32 = 500;

/// Two tasks calling at once, plus the slot kept for giving an item back, plus one for a
/// withdrawn get whose answer is still on its way.
static MEMORY: StaticCell<ClientMemory<4>> = StaticCell::new();
static CLIENT: StaticCell<Client<'static>> = StaticCell::new();
/// Each task's verdict.
static DONE: Channel<CriticalSectionRawMutex, Result<(), &'static str>, 2> = Channel::new();
static TALLY: Mutex<CriticalSectionRawMutex, RefCell<Tally>> = Mutex::new(RefCell::new(Tally {
    seen: [false; TOTAL as usize],
    got: 0,
    sum: 0,
    abandoned: 0,
    abandoned_in_flow: 0,
    manager_timeouts: 0,
}));

/// What both tasks saw.
struct Tally {
    seen: [bool; TOTAL as usize],
    got: u32,
    sum: u32,
    /// Gets dropped by their local limit: all of them, and those while items were flowing.
    abandoned: u32,
    abandoned_in_flow: u32,
    manager_timeouts: u32,
}

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
    for timer_first in [false, true] {
        spawner.spawn(consumer(queue, timer_first).map_err(|_| "cannot spawn a consumer")?);
    }
    let mut verdict = Ok(());
    for _ in 0..2 {
        if let Err(e) = DONE.receive().await {
            verdict = Err(e);
        }
    }
    verdict?;
    TALLY.lock(|tally| {
        let t = tally.borrow();
        println!(
            "{}: got {} items exactly once, sum {}; {} gets abandoned ({} while items flowed), {} timed out at the manager",
            NAME, t.got, t.sum, t.abandoned, t.abandoned_in_flow, t.manager_timeouts
        );
    });
    // Nothing left behind: no item came back twice, none is still on its way.
    let last = queue.get(Wait::Millis(EMPTY_WAIT_MS));
    match last.await {
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

#[embassy_executor::task(pool_size = 2)]
async fn consumer(queue: Numbers, timer_first: bool) {
    DONE.send(consume(queue, timer_first).await).await;
}

/// Gets with short limits until both tasks together have every item.
/// The queue, items as `u32` values.
type Numbers = Queue<'static, 'static, u32, 8>;

async fn consume(queue: Numbers, timer_first: bool) -> Result<(), &'static str> {
    let mut attempt = u32::from(timer_first) * 11;
    while TALLY.lock(|t| t.borrow().got) < TOTAL {
        let ms = 1 + (attempt * 7) % 23;
        // Every other get: the manager's timeout, 0-2 ms before the local one.
        let (wait, local_ms) = if attempt.is_multiple_of(2) {
            (Wait::Forever, ms)
        } else {
            (Wait::Millis(ms), ms + attempt % 3)
        };
        attempt += 1;
        let get = queue.get(wait);
        let limit = Duration::from_millis(local_ms.into());
        let outcome = if timer_first {
            timer_then(limit, get).await
        } else {
            with_timeout(limit, get).await.ok()
        };
        let verdict = TALLY.lock(|tally| {
            let mut t = tally.borrow_mut();
            match outcome {
                Some(Ok(n)) => {
                    let Some(n) = Some(n).filter(|n| (1..=TOTAL).contains(n)) else {
                        return Err("an item that was never put");
                    };
                    if core::mem::replace(&mut t.seen[n as usize - 1], true) {
                        println!("{}: item {} arrived twice", NAME, n);
                        return Err("an item arrived twice");
                    }
                    t.got += 1;
                    t.sum += n;
                }
                Some(Err(Error::Depot(DepotError::Timeout))) => t.manager_timeouts += 1,
                Some(Err(e)) => return Err(report(NAME, "get", e)),
                None => {
                    t.abandoned += 1;
                    if t.got > 0 {
                        t.abandoned_in_flow += 1;
                    }
                }
            }
            Ok(())
        });
        verdict?;
    }
    Ok(())
}

/// `future`'s output, or `None` once `limit` has passed; the timer is checked first, so the
/// future may be dropped even when its answer is already in.
async fn timer_then<F: Future>(limit: Duration, future: F) -> Option<F::Output> {
    let mut timer = pin!(Timer::after(limit));
    let mut future = pin!(future);
    poll_fn(|cx| {
        if timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        future.as_mut().poll(cx).map(Some)
    })
    .await
}
