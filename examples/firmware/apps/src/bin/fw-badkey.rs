//! depot client firmware with a WRONG authkey: connecting to the host manager at
//! 10.0.2.100:7777 must fail with `AuthFailed`. Exits 0 when it does (the expected outcome),
//! 1 when the connection succeeds or fails any other way.
#![no_std]
#![no_main]

use depot_board::println;
use depot_embassy::depot_core::Error as DepotError;
use depot_embassy::Error;
use depot_firmware_apps::{connect, AUTHKEY};
use embassy_executor::Spawner;
use embassy_net::Stack;
use embassy_time::Duration;
use panic_semihosting as _;

const NAME: &str = "fw-badkey";
const DEADLINE: Duration = Duration::from_secs(30);

#[embassy_executor::main(entry = "cortex_m_rt::entry", executor = "depot_board::Executor")]
async fn main(spawner: Spawner) {
    depot_board::run(spawner, depot_board::sockets!(1), NAME, DEADLINE, job).await
}

/// The real key with a byte changed: as close as a wrong key gets.
fn wrong_key(key: &mut [u8; 64]) -> &[u8] {
    // At least one byte, so even an empty real key has a wrong one.
    let len = AUTHKEY.len().clamp(1, key.len());
    key[..AUTHKEY.len().min(len)].copy_from_slice(&AUTHKEY[..AUTHKEY.len().min(len)]);
    key[0] ^= 0x20;
    &key[..len]
}

async fn job(stack: Stack<'static>) -> Result<(), &'static str> {
    let mut key = [0u8; 64];
    let outcome = connect(stack, wrong_key(&mut key)).await;
    match outcome {
        Err(Error::Depot(DepotError::AuthFailed)) => {
            println!("{}: got AuthFailed, as expected", NAME);
            Ok(())
        }
        Err(e) => {
            println!("{}: expected AuthFailed, got {}", NAME, e);
            Err("wrong error")
        }
        Ok(_) => Err("connected with a wrong authkey"),
    }
}
