//! A thread-mode executor that sleeps with `wfi` until an interrupt has work for it.
//!
//! embassy-executor's Cortex-M executor idles with `wfe`, which QEMU treats as a yield: an idle
//! firmware then keeps a host core busy. `wfi` stops the core until an interrupt is pending.
//! The usual race (a handler wakes a task after the loop saw no work, and the core then sleeps
//! through it) is closed by checking for work with interrupts masked: a pending interrupt still
//! ends `wfi`, and its handler runs as soon as they are unmasked.

use core::marker::PhantomData;
use core::sync::atomic::{AtomicBool, Ordering};

use embassy_executor::{raw, Spawner};

/// Set when a task was woken, by an interrupt handler or by another task.
static WORK: AtomicBool = AtomicBool::new(false);

// The raw executor calls this when a task becomes ready; there is only one executor.
#[export_name = "__pender"]
fn pender(_context: *mut ()) {
    WORK.store(true, Ordering::Release);
}

/// The executor `#[embassy_executor::main]` runs when pointed at it:
/// `#[embassy_executor::main(entry = "cortex_m_rt::entry", executor = "depot_board::Executor")]`.
pub struct Executor {
    inner: raw::Executor,
    // Thread mode only.
    not_send: PhantomData<*mut ()>,
}

impl Default for Executor {
    fn default() -> Self {
        Self::new()
    }
}

impl Executor {
    /// An executor with no tasks yet.
    pub fn new() -> Self {
        Self {
            inner: raw::Executor::new(core::ptr::null_mut()),
            not_send: PhantomData,
        }
    }

    /// Calls `init` to spawn the first tasks, then polls ready tasks forever, sleeping in
    /// between.
    pub fn run(&'static mut self, init: impl FnOnce(Spawner)) -> ! {
        init(self.inner.spawner());
        loop {
            WORK.store(false, Ordering::Relaxed);
            // SAFETY: `poll` must not be re-entered; only this loop calls it, in thread mode.
            unsafe { self.inner.poll() };
            cortex_m::interrupt::free(|_| {
                if !WORK.load(Ordering::Acquire) {
                    cortex_m::asm::wfi();
                }
            });
        }
    }
}
