//! The seed's first server: one process that is both the manager and a producer. It serves
//! `task_queue` (remote shutdown allowed) and puts random integers 1..=10 into it, `--count N`
//! of them (default: forever) `--interval-ms MS` apart (default 500), then keeps serving until
//! a client's `close`. Run `cargo run --example consumer` beside it.
//!
//! ```text
//! cargo run --example all_in_one -- [--addr ADDR] [--authkey KEY] [--count N] [--interval-ms MS]
//! ```

use std::process::ExitCode;
use std::time::Duration;

use depot::{Client, Error, ErrorCode, Manager};

mod common;
use common::{Settings, XorShift, QUEUE};

const NAME: &str = "all_in_one";

pub fn main() -> ExitCode {
    let settings = Settings::from_args(NAME, &["--addr", "--authkey", "--count", "--interval-ms"]);
    let count = settings.number(NAME, "--count");
    let interval = Duration::from_millis(settings.number(NAME, "--interval-ms").unwrap_or(500));
    let authkey = settings.authkey();

    let manager = Manager::builder()
        .listen(settings.addr())
        .authkey(&authkey)
        .queue(QUEUE, 1024)
        .allow_remote_shutdown(true)
        .start();
    let manager = match manager {
        Ok(m) => m,
        Err(e) => common::fail(NAME, &e.to_string()),
    };
    let addr = manager.address();
    println!("listening on {addr}");

    // The producer half talks to its own manager like any other client.
    let produced = Client::connect(addr, &authkey).and_then(|client| {
        let queue = client.queue::<u32>(QUEUE)?;
        let mut rng = XorShift::seeded(0);
        let (mut put, mut sum) = (0u64, 0u64);
        while count.is_none_or(|n| put < n) {
            let value = rng.one_to_ten();
            match queue.put(&value) {
                Ok(()) => {}
                // A client's `close` stopped the manager while we were producing.
                Err(
                    Error::Request {
                        code: ErrorCode::ShuttingDown,
                        ..
                    }
                    | Error::Disconnected { .. },
                ) => break,
                Err(e) => return Err(e),
            }
            put += 1;
            sum += u64::from(value);
            if !interval.is_zero() {
                std::thread::sleep(interval);
            }
        }
        Ok((put, sum))
    });
    match produced {
        Ok((put, sum)) => println!("put {put} items, sum {sum}"),
        Err(e) => common::fail(NAME, &e.to_string()),
    }

    match manager.join() {
        Ok(()) => {
            println!("stopped");
            ExitCode::SUCCESS
        }
        Err(e) => common::fail(NAME, &e.to_string()),
    }
}
