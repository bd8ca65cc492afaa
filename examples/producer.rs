//! The seed scenario's producer: connects to the manager and puts random integers 1..=10 (typed
//! `u32` items) into `task_queue`, forever or `--count N` times, `--interval-ms MS` apart.
//!
//! ```text
//! cargo run --example producer -- [--addr ADDR] [--authkey KEY] [--count N] [--interval-ms MS]
//! ```
//! When done it prints `put N items, sum S`.

use std::process::ExitCode;
use std::time::Duration;

use depot::Client;

mod common;
use common::{Settings, XorShift, QUEUE};

const NAME: &str = "producer";

pub fn main() -> ExitCode {
    let settings = Settings::from_args(NAME, &["--addr", "--authkey", "--count", "--interval-ms"]);
    let count = settings.number(NAME, "--count");
    let interval = Duration::from_millis(settings.number(NAME, "--interval-ms").unwrap_or(0));

    // Python: m = QueueManager(address=..., authkey=b'producer'); m.connect(); q = m.task_queue()
    let client = match Client::connect(settings.addr(), settings.authkey()) {
        Ok(c) => c,
        Err(e) => common::fail(NAME, &e.to_string()),
    };
    let queue = match client.queue::<u32>(QUEUE) {
        Ok(q) => q,
        Err(e) => common::fail(NAME, &e.to_string()),
    };

    let mut rng = XorShift::seeded(0);
    let (mut put, mut sum) = (0u64, 0u64);
    while count.is_none_or(|n| put < n) {
        let value = rng.one_to_ten();
        if let Err(e) = queue.put(&value) {
            println!("put {put} items, sum {sum}");
            common::fail(NAME, &e.to_string());
        }
        put += 1;
        sum += u64::from(value);
        if !interval.is_zero() {
            std::thread::sleep(interval);
        }
    }
    println!("put {put} items, sum {sum}");
    ExitCode::SUCCESS
}
