//! depot in one command: a manager (on a free port), two producers and two consumers, each a
//! thread with its own connection, moving random integers through `task_queue` for a few
//! seconds. It prints what flowed: items and sums per producer and consumer, whether the sums
//! match (every item delivered exactly once), and the throughput.
//!
//! ```text
//! cargo run --release --example demo -- [--seconds S] [--authkey KEY]
//! ```
//! Exits non-zero if anything was lost or duplicated.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use depot::{Client, Error, Manager};

mod common;
use common::{Settings, XorShift, QUEUE};

const NAME: &str = "demo";
const PRODUCERS: usize = 2;
const CONSUMERS: usize = 2;
/// What a consumer takes as "no more items" (producers only put 1..=10).
const STOP: u32 = 0;

#[derive(Default, Clone, Copy)]
struct Tally {
    items: u64,
    sum: u64,
}

pub fn main() -> ExitCode {
    let settings = Settings::from_args(NAME, &["--seconds", "--authkey"]);
    let seconds = settings.number(NAME, "--seconds").unwrap_or(3);
    match run(Duration::from_secs(seconds), &settings.authkey()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => common::fail(NAME, &e.to_string()),
    }
}

fn run(duration: Duration, authkey: &str) -> Result<bool, Error> {
    let manager = Manager::builder()
        .listen("127.0.0.1:0")
        .authkey(authkey)
        .queue(QUEUE, 1024)
        .start()?;
    let addr = manager.address();
    println!(
        "manager on {addr}; {PRODUCERS} producers and {CONSUMERS} consumers for {} s ...",
        duration.as_secs_f64()
    );

    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|i| {
            let stop = Arc::clone(&stop);
            let key = authkey.to_owned();
            thread::spawn(move || produce(addr, &key, i as u64, &stop))
        })
        .collect();
    let consumers: Vec<_> = (0..CONSUMERS)
        .map(|_| {
            let key = authkey.to_owned();
            thread::spawn(move || consume(addr, &key))
        })
        .collect();

    thread::sleep(duration);
    stop.store(true, Ordering::Relaxed);
    let produced: Vec<Tally> = producers
        .into_iter()
        .map(|t| t.join().expect("producer thread panicked"))
        .collect::<Result<_, _>>()?;
    // One stop marker per consumer, behind every item put.
    {
        let client = Client::connect(addr, authkey)?;
        let queue = client.queue::<u32>(QUEUE)?;
        for _ in 0..CONSUMERS {
            queue.put(&STOP)?;
        }
    }
    let consumed: Vec<Tally> = consumers
        .into_iter()
        .map(|t| t.join().expect("consumer thread panicked"))
        .collect::<Result<_, _>>()?;
    let elapsed = started.elapsed();
    manager.shutdown()?;

    for (i, t) in produced.iter().enumerate() {
        println!("producer {i}: put {:>9} items, sum {:>10}", t.items, t.sum);
    }
    for (i, t) in consumed.iter().enumerate() {
        println!("consumer {i}: got {:>9} items, sum {:>10}", t.items, t.sum);
    }
    let total = |ts: &[Tally]| {
        ts.iter().fold(Tally::default(), |a, t| Tally {
            items: a.items + t.items,
            sum: a.sum + t.sum,
        })
    };
    let (p, c) = (total(&produced), total(&consumed));
    let ok = p.items == c.items && p.sum == c.sum;
    println!(
        "checksum: put {} items (sum {}), got {} items (sum {}): {}",
        p.items,
        p.sum,
        c.items,
        c.sum,
        if ok { "match" } else { "MISMATCH" }
    );
    println!(
        "throughput: {:.0} items/s through the manager ({} items in {:.2} s)",
        c.items as f64 / elapsed.as_secs_f64(),
        c.items,
        elapsed.as_secs_f64()
    );
    Ok(ok)
}

fn produce(
    addr: SocketAddr,
    authkey: &str,
    stream: u64,
    stop: &AtomicBool,
) -> Result<Tally, Error> {
    let client = Client::connect(addr, authkey)?;
    let queue = client.queue::<u32>(QUEUE)?;
    let mut rng = XorShift::seeded(stream);
    let mut tally = Tally::default();
    while !stop.load(Ordering::Relaxed) {
        let value = rng.one_to_ten();
        queue.put(&value)?;
        tally.items += 1;
        tally.sum += u64::from(value);
    }
    Ok(tally)
}

fn consume(addr: SocketAddr, authkey: &str) -> Result<Tally, Error> {
    let client = Client::connect(addr, authkey)?;
    let queue = client.queue::<u32>(QUEUE)?;
    let mut tally = Tally::default();
    loop {
        let value = queue.get()?;
        if value == STOP {
            return Ok(tally);
        }
        tally.items += 1;
        tally.sum += u64::from(value);
    }
}
