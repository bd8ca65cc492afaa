//! The LAN9118 as a smoltcp `phy::Device`, for firmware that drives smoltcp by hand (no
//! embassy-net, no executor): the same driver, without wakers (the loop polls).

use core::task::{Context, Waker};

use embassy_net_driver::{Driver, RxToken as _, TxToken as _};
use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::time::Instant;

use crate::lan9118::{self, Lan9118, MTU};

/// The board's NIC for smoltcp's `Interface::poll`.
pub struct Phy(pub Lan9118);

/// A received frame.
pub struct RxToken<'a>(lan9118::RxToken<'a>);

/// Room for one frame to send.
pub struct TxToken<'a>(lan9118::TxToken<'a>);

impl phy::Device for Phy {
    type RxToken<'a> = RxToken<'a>;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _now: Instant) -> Option<(RxToken<'_>, TxToken<'_>)> {
        let mut cx = Context::from_waker(Waker::noop());
        let (rx, tx) = self.0.receive(&mut cx)?;
        Some((RxToken(rx), TxToken(tx)))
    }

    fn transmit(&mut self, _now: Instant) -> Option<TxToken<'_>> {
        let mut cx = Context::from_waker(Waker::noop());
        self.0.transmit(&mut cx).map(TxToken)
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = MTU;
        caps.max_burst_size = Some(1);
        caps
    }
}

impl phy::RxToken for RxToken<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        self.0.consume(|frame| f(frame))
    }
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        self.0.consume(len, f)
    }
}
