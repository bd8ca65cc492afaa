//! Board support for QEMU's `mps2-an385` (Cortex-M3, 25 MHz) for depot's firmware examples.
//!
//! What it provides:
//! - an `embassy-time` driver on SysTick (1 kHz tick),
//! - a polled driver for the board's LAN9118 Ethernet controller, for `embassy-net`,
//! - helpers to start the network stack with DHCP and wait for the lease,
//! - semihosting helpers for tests: [`println!`], [`exit`] and a HardFault handler that fails
//!   the run instead of hanging it,
//! - [`entropy`]: seed bytes for the network stack.
//!
//! An app is: [`init`], [`net::start`], [`net::wait_for_dhcp`], its job, then [`exit`]
//! (or all of it through [`run`]).
//!
//! # Entropy is for tests only
//!
//! The board has no hardware RNG. [`entropy`] mixes the host's clock, QEMU's command line and
//! timer jitter read through semihosting: enough to make test runs differ, but predictable and
//! not secret. It must never seed keys or nonces that protect anything. A real board must take
//! its seed from its hardware RNG (or a provisioned secret), not from this crate.
#![no_std]

mod entropy;
mod host;
pub mod lan9118;
pub mod net;
mod time;

use core::fmt::Display;
use core::future::Future;

use embassy_time::{with_timeout, Duration};

pub use entropy::entropy;
pub use host::exit;
pub use lan9118::Lan9118;

#[doc(hidden)]
pub mod __private {
    pub use cortex_m_semihosting as semihosting;
}

/// What [`init`] hands to the app.
pub struct Board {
    /// The Ethernet controller, ready to be given to [`net::start`].
    pub nic: Lan9118,
    /// The controller's MAC address.
    pub mac: [u8; 6],
    /// Seed for the network stack, from [`entropy`] (test-only quality).
    pub seed: u64,
}

/// Starts the time driver and brings up the NIC. Call once, first thing in `main`.
///
/// Takes the core peripherals (SysTick is the time base); a failure to find the NIC ends the
/// run with a failure exit, since no test can pass without it.
pub fn init() -> Board {
    let core = cortex_m::Peripherals::take().expect("depot_board::init called twice");
    time::start(core.SYST);
    let nic = match Lan9118::new() {
        Ok(nic) => nic,
        Err(err) => {
            println!("board: LAN9118 not usable: {:?}", err);
            exit(false)
        }
    };
    let mac = nic.mac();
    let seed = entropy();
    let mut seed_word = [0u8; 8];
    seed_word.copy_from_slice(&seed[..8]);
    Board {
        nic,
        mac,
        seed: u64::from_le_bytes(seed_word),
    }
}

/// Runs an app's job with an overall deadline and ends the QEMU run with its verdict:
/// prints `NAME: PASS` and exits 0, or prints `NAME: FAIL: reason` and exits 1.
pub async fn run<E: Display>(
    name: &str,
    deadline: Duration,
    job: impl Future<Output = Result<(), E>>,
) -> ! {
    match with_timeout(deadline, job).await {
        Ok(Ok(())) => {
            println!("{}: PASS", name);
            exit(true)
        }
        Ok(Err(err)) => {
            println!("{}: FAIL: {}", name, err);
            exit(false)
        }
        Err(_) => {
            println!(
                "{}: FAIL: timed out after {} ms",
                name,
                deadline.as_millis()
            );
            exit(false)
        }
    }
}
