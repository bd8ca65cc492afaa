//! Board support for QEMU's `mps2-an385` (Cortex-M3, 25 MHz) for depot's firmware examples.
//!
//! What it provides:
//! - [`Executor`]: embassy's raw executor in a loop that sleeps with `wfi` when no task is
//!   ready, so an idle board stops its core (and QEMU its host thread),
//! - a tickless `embassy-time` driver on the board's CMSDK timers (an alarm per due timer,
//!   no periodic tick),
//! - an interrupt-driven driver for the board's LAN9118 Ethernet controller, for `embassy-net`,
//! - helpers to start the network stack with DHCP and wait for the lease,
//! - [`phy::Phy`]: the same LAN9118 driver as a smoltcp `phy::Device`, and [`alarm_at`], for
//!   firmware that drives smoltcp by hand from its own loop (no executor),
//! - semihosting helpers for tests: [`println!`], [`exit`] and a HardFault handler that fails
//!   the run instead of hanging it,
//! - [`entropy`]: seed bytes for the network stack.
//!
//! An app's `main` is one call to [`run`]: it starts the board and the network, waits for the
//! DHCP lease, runs the app's job on the stack under a deadline and ends the run with the
//! job's verdict. [`sockets!`] gives the network stack its socket slots:
//!
//! ```ignore
//! #[embassy_executor::main(entry = "cortex_m_rt::entry", executor = "depot_board::Executor")]
//! async fn main(spawner: Spawner) {
//!     depot_board::run(spawner, depot_board::sockets!(1), "fw-name", DEADLINE, job).await
//! }
//!
//! async fn job(stack: Stack<'static>) -> Result<(), &'static str> { ... }
//! ```
//!
//! # Entropy is for tests only
//!
//! The board has no hardware RNG. [`entropy`] mixes the host's clock, QEMU's command line and
//! timer jitter read through semihosting: enough to make test runs differ, but predictable and
//! not secret. It must never seed keys or nonces that protect anything. A real board must take
//! its seed from its hardware RNG (or a provisioned secret), not from this crate.
#![no_std]

mod entropy;
mod executor;
mod host;
pub mod lan9118;
pub mod net;
pub mod phy;
mod time;

pub use time::alarm_at;

use core::future::Future;
use core::sync::atomic::Ordering;

use cortex_m::interrupt::InterruptNumber;
use cortex_m::peripheral::NVIC;
use cortex_m_rt::exception;
use embassy_executor::Spawner;
use embassy_net::{Stack, StackResources};
use embassy_time::{with_timeout, Duration};

pub use entropy::entropy;
pub use executor::Executor;
pub use host::exit;
pub use lan9118::Lan9118;

#[doc(hidden)]
pub mod __private {
    pub use cortex_m_semihosting as semihosting;
    pub use embassy_net::StackResources;
    pub use static_cell::StaticCell;
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

/// An NVIC line of this board.
#[derive(Clone, Copy)]
struct Irq(u16);

// SAFETY: the numbers come from the board's interrupt map (the `*_IRQ` constants) and are
// below the 32 lines mps2-an385 wires up.
unsafe impl InterruptNumber for Irq {
    fn number(self) -> u16 {
        self.0
    }
}

/// Starts the time driver and brings up the NIC. Call once, first thing in `main`
/// ([`start`] does).
///
/// Takes the core peripherals, so a second call panics; a failure to find the NIC ends the
/// run with a failure exit, since no test can pass without it.
pub fn init() -> Board {
    cortex_m::Peripherals::take().expect("depot_board::init called twice");
    time::start();
    let nic = match Lan9118::new() {
        Ok(nic) => nic,
        Err(err) => {
            println!("board: LAN9118 not usable: {:?}", err);
            exit(false)
        }
    };
    for irq in [time::TIME_BASE_IRQ, time::ALARM_IRQ, lan9118::IRQ] {
        // SAFETY: no critical section relies on these lines being masked: the handlers only
        // touch state behind their own critical sections.
        unsafe { NVIC::unmask(Irq(irq)) };
    }
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

/// [`init`], then [`net::start`] on the NIC with `resources` (one socket slot per socket the app
/// opens, plus one for DHCP): for an app that writes its own `main` instead of [`run`].
pub fn start<const SOCK: usize>(
    spawner: Spawner,
    resources: &'static mut StackResources<SOCK>,
) -> Stack<'static> {
    let board = init();
    net::start(spawner, board.nic, resources, board.seed)
}

/// Peripheral interrupts have no handlers of their own without a device crate: cortex-m-rt
/// sends them all here, with the line's number.
#[exception]
unsafe fn DefaultHandler(irqn: i16) {
    match irqn {
        n if n == time::TIME_BASE_IRQ as i16 => time::on_time_base(),
        n if n == time::ALARM_IRQ as i16 => time::on_alarm(),
        n if n == lan9118::IRQ as i16 => lan9118::on_interrupt(),
        // A fault or an interrupt nobody enabled: fail the run rather than spin in it.
        n => {
            println!("board: unexpected exception or interrupt {}", n);
            exit(false)
        }
    }
}

/// Stack resources for `N` sockets plus the DHCP client's, in a `static` of their own (each
/// call site has its own): `depot_board::sockets!(1)` for an app with one TCP socket.
#[macro_export]
macro_rules! sockets {
    ($n:expr) => {{
        static RESOURCES: $crate::__private::StaticCell<
            $crate::__private::StackResources<{ $n + 1 }>,
        > = $crate::__private::StaticCell::new();
        RESOURCES.init($crate::__private::StackResources::new())
    }};
}

/// An app's whole `main`: [`start`]s the board and the network with `resources` (see
/// [`sockets!`]), waits for the DHCP lease ([`net::up`]), runs `job` on the stack, all under
/// `deadline`, and ends the QEMU run with the verdict: prints `NAME: PASS` and exits 0, or
/// prints `NAME: FAIL: reason` and exits 1.
pub async fn run<const SOCK: usize, F>(
    spawner: Spawner,
    resources: &'static mut StackResources<SOCK>,
    name: &str,
    deadline: Duration,
    job: impl FnOnce(Stack<'static>) -> F,
) -> !
where
    F: Future<Output = Result<(), &'static str>>,
{
    let stack = start(spawner, resources);
    // The job is built inside the timed future, so only one copy of its state exists.
    let outcome = with_timeout(deadline, async move {
        net::up(stack).await?;
        job(stack).await
    })
    .await;
    // What woke the core: NIC interrupts prove the driver is interrupt-driven, and alarms
    // show how often time did (there is no periodic tick).
    println!(
        "{}: wake-ups: nic {}, alarm {}",
        name,
        lan9118::INTERRUPTS.load(Ordering::Relaxed),
        time::ALARMS.load(Ordering::Relaxed)
    );
    match outcome {
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
