//! The seed scenario's `close`: calls the manager's registered call `close`, which stops it.
//! The manager must allow remote shutdown (the `manager` and `all_in_one` examples do).
//!
//! ```text
//! cargo run --example close -- [--addr ADDR] [--authkey KEY]
//! ```

use std::process::ExitCode;

use depot::Client;

mod common;
use common::Settings;

const NAME: &str = "close";

pub fn main() -> ExitCode {
    let settings = Settings::from_args(NAME, &["--addr", "--authkey"]);
    let result =
        Client::connect(settings.addr(), settings.authkey()).and_then(|c| c.call("close", &()));
    match result {
        Ok(()) => {
            println!("asked the manager at {} to stop", settings.addr());
            ExitCode::SUCCESS
        }
        Err(e) => common::fail(NAME, &e.to_string()),
    }
}
