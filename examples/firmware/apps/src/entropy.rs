//! TEST-ONLY entropy for depot's handshake nonces on QEMU, which has no RNG.
//!
//! A splitmix64 stream seeded once from `depot_board::entropy()` (host clock, QEMU command
//! line, timer phase, read through semihosting). Good enough that test runs never repeat a
//! nonce; predictable to anyone who can see the host, so never use it on a real device: take
//! the bytes from the hardware RNG there (see `depot_embassy::Entropy`).

use depot_embassy::Entropy;

/// A seeded splitmix64 generator. Test-only, see the module docs.
pub struct TestEntropy {
    state: u64,
}

impl TestEntropy {
    /// A generator to be replaced by [`TestEntropy::from_board`] before use (it lets a
    /// `static` hold one).
    pub const UNSEEDED: TestEntropy = TestEntropy { state: 0 };

    /// Seeded from the board's (weak) entropy.
    pub fn from_board() -> Self {
        let seed = depot_board::entropy();
        let mut state = 0u64;
        for chunk in seed.chunks(8) {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            state = mix(state ^ u64::from_le_bytes(word));
        }
        TestEntropy { state }
    }

    fn next(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.state)
    }
}

/// splitmix64's finaliser. Out of line: its 64-bit multiplies are long on a Cortex-M3.
#[inline(never)]
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Entropy for TestEntropy {
    fn fill(&mut self, buf: &mut [u8]) {
        // Each word's bytes, least significant first, without slicing's panic paths.
        let mut word = 0;
        for (i, byte) in buf.iter_mut().enumerate() {
            if i % 8 == 0 {
                word = self.next();
            }
            *byte = word as u8;
            word >>= 8;
        }
    }
}
