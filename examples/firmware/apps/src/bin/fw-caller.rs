//! depot client firmware calling a host manager's registered call: the built-in `close` of a
//! host manager at 10.0.2.100:7777 that allows remote shutdown, which stops it. Exits 0 once
//! the call answered `null` (printing `fw-caller: close answered`); 1 on any error or after
//! 30 s. The host checks that its manager stopped.
#![no_std]
#![no_main]

use depot_board::println;
use depot_firmware_apps::{connect, report, AUTHKEY};
use embassy_executor::Spawner;
use embassy_net::Stack;
use embassy_time::Duration;
use panic_semihosting as _;

const NAME: &str = "fw-caller";
const DEADLINE: Duration = Duration::from_secs(30);
/// The value model's `null`: `close` takes and answers it.
const NULL: [u8; 1] = [0xF6];

#[embassy_executor::main(entry = "cortex_m_rt::entry", executor = "depot_board::Executor")]
async fn main(spawner: Spawner) {
    depot_board::run(spawner, depot_board::sockets!(1), NAME, DEADLINE, job).await
}

async fn job(stack: Stack<'static>) -> Result<(), &'static str> {
    let client = connect(stack, AUTHKEY)
        .await
        .map_err(|e| report(NAME, "connect", e))?;
    let mut response = [0u8; 8];
    let len = client
        .call_raw("close", &NULL, &mut response)
        .await
        .map_err(|e| report(NAME, "call", e))?;
    if response[..len] != NULL {
        return Err("close answered something other than null");
    }
    println!("{}: close answered", NAME);
    client.close().await;
    Ok(())
}
