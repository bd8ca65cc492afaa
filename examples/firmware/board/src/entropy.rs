//! Seed bytes for the network stack on a board with no RNG. TEST-ONLY: see the crate docs.
//!
//! QEMU's mps2-an385 has no random number generator. We mix what varies between runs:
//! the host's wall-clock time and QEMU's elapsed-time counter (semihosting SYS_TIME,
//! SYS_CLOCK, SYS_ELAPSED), the QEMU command line (SYS_GET_CMDLINE: the test harness
//! passes a fresh random value with `-append`), and the time base's current phase.
//! None of this is secret: it only has to make runs differ (TCP ports, sequence numbers).

use cortex_m_semihosting::{nr, syscall1};

/// splitmix64's finaliser: spreads every input bit over the whole word.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

struct Pool(u64);

impl Pool {
    fn add(&mut self, value: u64) {
        self.0 = mix(self.0 ^ value).wrapping_add(0x9E37_79B9_7F4A_7C15);
    }
}

fn host_time() -> u64 {
    // SAFETY: SYS_TIME and SYS_CLOCK take no argument block (r1 = 0).
    unsafe { (syscall1(nr::TIME, 0) as u64) << 32 | syscall1(nr::CLOCK, 0) as u64 }
}

fn host_elapsed() -> u64 {
    let mut block = [0u32; 2];
    // SAFETY: SYS_ELAPSED writes two words into the block that r1 points to.
    let status = unsafe { syscall1(nr::ELAPSED, block.as_mut_ptr() as usize) };
    if status == 0 {
        u64::from(block[1]) << 32 | u64::from(block[0])
    } else {
        0
    }
}

fn mix_cmdline(pool: &mut Pool) {
    let mut buf = [0u8; 256];
    // Argument block: buffer address and its size; the host overwrites the size with the
    // length it wrote.
    let mut block = [buf.as_mut_ptr() as usize, buf.len()];
    // SAFETY: the host writes at most `buf.len()` bytes into `buf` and one word into `block`,
    // both live and exclusively borrowed for the call.
    let status = unsafe { syscall1(nr::GET_CMDLINE, block.as_mut_ptr() as usize) };
    if status != 0 {
        return;
    }
    for chunk in buf[..block[1].min(buf.len())].chunks(8) {
        let mut word = [0u8; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        pool.add(u64::from_le_bytes(word));
    }
}

/// 32 bytes of seed material. Test-only quality: predictable to anyone who knows the host's
/// clock and the QEMU command line. A real board must read its hardware RNG instead.
pub fn entropy() -> [u8; 32] {
    let mut pool = Pool(0);
    pool.add(host_time());
    pool.add(host_elapsed());
    mix_cmdline(&mut pool);
    pool.add(u64::from(crate::time::sub_tick()));
    let mut out = [0u8; 32];
    for chunk in out.chunks_mut(8) {
        pool.add(0);
        chunk.copy_from_slice(&pool.0.to_le_bytes());
    }
    out
}
