//! The seed scenario's consumer: connects to the manager and prints every item it takes from
//! `task_queue`, one per line, waiting while the queue is empty; forever or `--count N` items.
//!
//! ```text
//! cargo run --example consumer -- [--addr ADDR] [--authkey KEY] [--count N]
//! ```

use std::io::Write;
use std::process::ExitCode;

use depot::Client;

mod common;
use common::{Settings, QUEUE};

const NAME: &str = "consumer";

pub fn main() -> ExitCode {
    let settings = Settings::from_args(NAME, &["--addr", "--authkey", "--count"]);
    let count = settings.number(NAME, "--count");

    let client = match Client::connect(settings.addr(), settings.authkey()) {
        Ok(c) => c,
        Err(e) => common::fail(NAME, &e.to_string()),
    };
    let queue = match client.queue::<u32>(QUEUE) {
        Ok(q) => q,
        Err(e) => common::fail(NAME, &e.to_string()),
    };

    let mut out = std::io::stdout().lock();
    let mut got = 0u64;
    while count.is_none_or(|n| got < n) {
        // Python: print(q.get())  -- blocks while the queue is empty
        match queue.get() {
            Ok(value) => {
                got += 1;
                if writeln!(out, "{value}").and_then(|()| out.flush()).is_err() {
                    return ExitCode::FAILURE;
                }
            }
            Err(e) => common::fail(NAME, &e.to_string()),
        }
    }
    ExitCode::SUCCESS
}
