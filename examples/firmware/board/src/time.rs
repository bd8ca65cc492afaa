//! Tickless `embassy-time` driver on the board's two CMSDK APB timers.
//!
//! A periodic tick would wake the core (and keep QEMU busy) even when nothing is due. Instead:
//! - TIMER0 (IRQ 8) counts down freely at the 25 MHz core clock and reloads 0xFFFF_FFFF; its
//!   interrupt only counts wraps (one every 172 s), so `now()` is wraps * 2^32 plus the cycles
//!   counted since the last one.
//! - TIMER1 (IRQ 9) is a one-shot alarm armed for the earliest timer in the queue, and stopped
//!   when the queue is empty. Alarms beyond its 32-bit range fire early and are re-armed.
//!
//! Time is kept in milliseconds (`tick-hz-1_000`): 25 000 timer cycles each.

use core::cell::RefCell;
use core::ptr;
use core::sync::atomic::{AtomicU32, Ordering};
use core::task::Waker;

use critical_section::{CriticalSection, Mutex};
use embassy_time_driver::Driver;
use embassy_time_queue_utils::Queue;

/// Core and APB clock of the mps2-an385 (and of QEMU's model of it).
const CLOCK_HZ: u64 = 25_000_000;
const CYCLES_PER_TICK: u64 = CLOCK_HZ / embassy_time_driver::TICK_HZ;
const _: () = assert!(CLOCK_HZ.is_multiple_of(embassy_time_driver::TICK_HZ));

/// TIMER0: the free-running time base.
const TIME_BASE: usize = 0x4000_0000;
/// TIMER1: the alarm.
const ALARM: usize = 0x4000_1000;
/// Their NVIC lines on mps2-an385.
pub(crate) const TIME_BASE_IRQ: u16 = 8;
pub(crate) const ALARM_IRQ: u16 = 9;

/// Cycles from boot to the time base's first wrap.
const FIRST_WRAP_AFTER: u32 = 2 * CLOCK_HZ as u32;

// CMSDK APB timer registers and bits.
const CTRL: usize = 0x0;
const VALUE: usize = 0x4;
const RELOAD: usize = 0x8;
const INTSTATUS: usize = 0xC;
const CTRL_EN: u32 = 1 << 0;
const CTRL_IRQEN: u32 = 1 << 3;

fn read(timer: usize, offset: usize) -> u32 {
    // SAFETY: `timer + offset` is a 32-bit register of a CMSDK timer on this board; device
    // memory that aliases no Rust object.
    unsafe { ptr::read_volatile((timer + offset) as *const u32) }
}

fn write(timer: usize, offset: usize, value: u32) {
    // SAFETY: as in `read`.
    unsafe { ptr::write_volatile((timer + offset) as *mut u32, value) }
}

struct State {
    /// Wraps of TIME_BASE seen so far.
    wraps: u64,
    queue: Queue,
}

struct TimerDriver {
    // Shared between thread mode and both timer handlers; Cortex-M3 has no 64-bit atomics.
    state: Mutex<RefCell<State>>,
}

embassy_time_driver::time_driver_impl!(static DRIVER: TimerDriver = TimerDriver {
    state: Mutex::new(RefCell::new(State {
        wraps: 0,
        queue: Queue::new(),
    })),
});

/// Timer cycles since `start`. Needs the critical section: a wrap not yet counted by the
/// handler shows as a pending interrupt, and is counted here instead.
fn cycles(cs: CriticalSection, state: &Mutex<RefCell<State>>) -> u64 {
    let wraps = state.borrow_ref(cs).wraps;
    let mut count = read(TIME_BASE, VALUE);
    let mut pending_wrap = 0;
    if read(TIME_BASE, INTSTATUS) & 1 != 0 {
        // Read again: the value read before the flag may be from before the wrap.
        count = read(TIME_BASE, VALUE);
        pending_wrap = 1;
    }
    // The interrupt comes as the count reaches 0, before the reload: 0 starts a period, so
    // the cycles into it are 0 - count (mod 2^32), and time never steps back at a wrap.
    ((wraps + pending_wrap) << 32) | u64::from(count.wrapping_neg())
}

impl TimerDriver {
    /// Arms the alarm for tick `at`, or stops it for `u64::MAX`. Returns false if `at` has
    /// already passed: the caller must process the queue again.
    fn set_alarm(&self, cs: CriticalSection, at: u64) -> bool {
        write(ALARM, CTRL, 0);
        write(ALARM, INTSTATUS, 1);
        if at == u64::MAX {
            return true;
        }
        let now = cycles(cs, &self.state);
        let target = at.saturating_mul(CYCLES_PER_TICK);
        if target <= now {
            return false;
        }
        // RELOAD 0 makes it one-shot: after reaching 0 it stays there, with no further interrupt.
        let delay = (target - now).min(u64::from(u32::MAX)) as u32;
        write(ALARM, RELOAD, 0);
        write(ALARM, VALUE, delay);
        write(ALARM, CTRL, CTRL_EN | CTRL_IRQEN);
        true
    }

    /// Wakes every expired timer and arms the alarm for the next one.
    fn process_queue(&self, cs: CriticalSection) {
        loop {
            let now = cycles(cs, &self.state) / CYCLES_PER_TICK;
            let next = self.state.borrow_ref_mut(cs).queue.next_expiration(now);
            if self.set_alarm(cs, next) {
                return;
            }
        }
    }
}

impl Driver for TimerDriver {
    fn now(&self) -> u64 {
        critical_section::with(|cs| cycles(cs, &self.state) / CYCLES_PER_TICK)
    }

    fn schedule_wake(&self, at: u64, waker: &Waker) {
        critical_section::with(|cs| {
            let changed = self.state.borrow_ref_mut(cs).queue.schedule_wake(at, waker);
            if changed {
                self.process_queue(cs);
            }
        });
    }
}

/// Starts the time base (the alarm stays off until a timer is scheduled). Called once by
/// [`crate::init`], which then unmasks both interrupts.
pub(crate) fn start() {
    for timer in [TIME_BASE, ALARM] {
        write(timer, CTRL, 0);
        write(timer, INTSTATUS, 1);
    }
    write(TIME_BASE, RELOAD, u32::MAX);
    // Start 2 s before the first wrap (the clock reads ~170 s at boot), so every test run
    // crosses a wrap instead of only runs longer than 172 s.
    write(TIME_BASE, VALUE, FIRST_WRAP_AFTER);
    write(TIME_BASE, CTRL, CTRL_EN | CTRL_IRQEN);
}

/// Low bits of the time base: a few bits of timing jitter for [`crate::entropy`].
pub(crate) fn sub_tick() -> u32 {
    read(TIME_BASE, VALUE)
}

/// TIMER0's interrupt: the time base wrapped.
pub(crate) fn on_time_base() {
    critical_section::with(|cs| {
        // `cycles` may have seen this wrap pending already; counting it clears the flag, so
        // neither counts it twice.
        if read(TIME_BASE, INTSTATUS) & 1 != 0 {
            write(TIME_BASE, INTSTATUS, 1);
            DRIVER.state.borrow_ref_mut(cs).wraps += 1;
        }
    });
}

/// Arms the alarm for millisecond tick `at`, for firmware that polls by hand and has no
/// embassy timers (it replaces their alarm): its interrupt ends a `wfi`. False if `at` has
/// passed already (do not sleep then).
pub fn alarm_at(at: u64) -> bool {
    critical_section::with(|cs| DRIVER.set_alarm(cs, at))
}

/// Alarm interrupts taken so far: with no periodic tick, this is how often time woke the core.
pub(crate) static ALARMS: AtomicU32 = AtomicU32::new(0);

/// TIMER1's interrupt: the alarm is due (or an early re-arm point for a far one).
pub(crate) fn on_alarm() {
    ALARMS.fetch_add(1, Ordering::Relaxed);
    critical_section::with(|cs| DRIVER.process_queue(cs));
}
