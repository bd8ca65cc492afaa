//! Talking to the test harness through semihosting: verdict prints, exit codes, faults.
//!
//! QEMU runs with `-semihosting-config enable=on,target=native`, so prints go to its stderr
//! and an exit request ends QEMU with status 0 (success) or 1 (failure).

use cortex_m_rt::{exception, ExceptionFrame};
use cortex_m_semihosting::debug;

/// Ends the QEMU run: exit status 0 if `success`, else 1.
pub fn exit(success: bool) -> ! {
    debug::exit(if success {
        debug::EXIT_SUCCESS
    } else {
        debug::EXIT_FAILURE
    });
    // Only reached without a semihosting host (e.g. on real hardware without a debugger).
    loop {
        cortex_m::asm::wfi();
    }
}

/// Prints a line to the host's stderr over semihosting, like `println!`.
///
/// stderr, so that stdout carries nothing but defmt frames when the firmware logs through
/// defmt-semihosting, and `defmt-print` can decode it as it is. Each call traps to the host,
/// which is slow: use it for verdicts and milestones, not in hot loops.
#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => {
        $crate::__private::semihosting::heprintln!($($arg)*)
    };
}

/// cortex-m-rt's default HardFault handler spins forever, which a test would only see as a
/// timeout: report the fault and fail fast instead.
#[exception]
unsafe fn HardFault(frame: &ExceptionFrame) -> ! {
    crate::println!("HardFault at pc={:#010x}", frame.pc());
    exit(false)
}
