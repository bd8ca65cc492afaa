//! embassy-time driver on SysTick: one interrupt per millisecond.
//!
//! QEMU's mps2 machines have no RTC-like timer that a driver exists for, but every Cortex-M has
//! SysTick. A 1 kHz tick matches `embassy-time`'s `tick-hz-1_000`, so `now()` is the tick count
//! itself and no sub-tick arithmetic is needed.

use core::cell::RefCell;
use core::task::Waker;

use cortex_m::peripheral::syst::SystClkSource;
use cortex_m::peripheral::SYST;
use cortex_m_rt::exception;
use critical_section::Mutex;
use embassy_time_driver::Driver;
use embassy_time_queue_utils::Queue;

/// Core clock of the mps2-an385 (and QEMU's model of it).
const CORE_CLOCK_HZ: u32 = 25_000_000;
const TICK_HZ: u32 = 1_000;

struct State {
    /// Milliseconds since `start`; u64 because it must never wrap.
    ticks: u64,
    /// Earliest deadline in `queue`, so the tick handler scans the queue only when one is due.
    next_alarm: u64,
    queue: Queue,
}

struct SysTickDriver {
    // Shared between thread mode and the SysTick handler; Cortex-M3 has no 64-bit atomics.
    state: Mutex<RefCell<State>>,
}

embassy_time_driver::time_driver_impl!(static DRIVER: SysTickDriver = SysTickDriver {
    state: Mutex::new(RefCell::new(State {
        ticks: 0,
        next_alarm: u64::MAX,
        queue: Queue::new(),
    })),
});

impl Driver for SysTickDriver {
    fn now(&self) -> u64 {
        critical_section::with(|cs| self.state.borrow_ref(cs).ticks)
    }

    fn schedule_wake(&self, at: u64, waker: &Waker) {
        critical_section::with(|cs| {
            let mut state = self.state.borrow_ref_mut(cs);
            if state.queue.schedule_wake(at, waker) {
                let now = state.ticks;
                state.next_alarm = state.queue.next_expiration(now);
            }
        });
    }
}

/// Starts the 1 kHz tick. Called once by [`crate::init`].
pub(crate) fn start(mut syst: SYST) {
    syst.set_clock_source(SystClkSource::Core);
    syst.set_reload(CORE_CLOCK_HZ / TICK_HZ - 1);
    syst.clear_current();
    syst.enable_interrupt();
    syst.enable_counter();
}

/// Current value of the SysTick down-counter: a few bits of timing jitter for [`crate::entropy`].
pub(crate) fn sub_tick() -> u32 {
    SYST::get_current()
}

#[exception]
fn SysTick() {
    critical_section::with(|cs| {
        let mut state = DRIVER.state.borrow_ref_mut(cs);
        state.ticks += 1;
        if state.ticks >= state.next_alarm {
            let now = state.ticks;
            // Wakes every expired timer and tells when the next one is due.
            state.next_alarm = state.queue.next_expiration(now);
        }
    });
    // The NIC is polled: no interrupt line is wired up, so check for frames once per tick.
    crate::lan9118::on_tick();
}
