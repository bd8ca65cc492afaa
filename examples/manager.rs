//! The seed scenario's manager: serves the queue `task_queue` at 127.0.0.1:5000 with the authkey
//! `producer` until a client asks it to stop (`cargo run --example close`).
//!
//! ```text
//! cargo run --example manager -- [--addr ADDR] [--authkey KEY] [--capacity N]
//! ```
//! `DEPOT_ADDR` and `DEPOT_AUTHKEY` stand in for the flags. Port 0 picks a free port; the
//! address is printed as `listening on ADDR`.

use std::process::ExitCode;

use depot::Manager;

mod common;
use common::{Settings, QUEUE};

const NAME: &str = "manager";

pub fn main() -> ExitCode {
    let settings = Settings::from_args(NAME, &["--addr", "--authkey", "--capacity"]);
    let capacity = settings.number(NAME, "--capacity").unwrap_or(1024);
    let capacity = u32::try_from(capacity).unwrap_or(u32::MAX);

    // Python: QueueManager.register('task_queue', callable=lambda: queue)
    //         QueueManager(address=('127.0.0.1', 5000), authkey=b'producer').get_server()
    let started = Manager::builder()
        .listen(settings.addr())
        .authkey(settings.authkey())
        .queue(QUEUE, capacity)
        .allow_remote_shutdown(true)
        .start();
    let manager = match started {
        Ok(m) => m,
        Err(e) => common::fail(NAME, &e.to_string()),
    };
    println!("listening on {}", manager.address());

    // serve_forever(): until a client's `close`.
    match manager.join() {
        Ok(()) => {
            println!("stopped");
            ExitCode::SUCCESS
        }
        Err(e) => common::fail(NAME, &e.to_string()),
    }
}
