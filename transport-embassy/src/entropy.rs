//! Random bytes for handshake nonces, from the application.

use depot_core::wire::NONCE_LEN;

/// A source of random bytes for the handshake nonces of both the client and the manager.
///
/// The nonces only have to be fresh (never repeated for the same authkey): a repeated nonce
/// lets an eavesdropper replay a recorded session. They need not be secret, but predictable
/// nonces weaken the replay protection the same way.
///
/// - **Boards with a hardware RNG** (STM32 `RNG`, nRF `RNG`, RP2040 ROSC, ESP32): implement
///   this over the HAL's driver, e.g. `impl Entropy for MyRng { fn fill(&mut self, b: &mut
///   [u8]) { self.0.fill_bytes(b) } }`, or seed a CSPRNG (ChaCha) from it once.
/// - **Boards without one**: seed a CSPRNG from a per-device secret provisioned at the factory
///   plus a boot counter kept in flash, so no two boots repeat a stream.
/// - **QEMU test firmware** has neither: it mixes the host clock and timer jitter read through
///   semihosting. That is weak, predictable entropy, fine to make test runs differ and for
///   nothing else.
///
/// Any `FnMut(&mut [u8])` is an `Entropy`, so a closure over a HAL driver works too.
pub trait Entropy {
    /// Fills `buf` with random bytes.
    fn fill(&mut self, buf: &mut [u8]);
}

impl<F: FnMut(&mut [u8])> Entropy for F {
    fn fill(&mut self, buf: &mut [u8]) {
        self(buf)
    }
}

/// A fresh handshake nonce.
pub(crate) fn nonce(entropy: &mut (impl Entropy + ?Sized)) -> [u8; NONCE_LEN] {
    let mut nonce = [0; NONCE_LEN];
    entropy.fill(&mut nonce);
    nonce
}
