//! Board support for an RP2040 with a WIZnet W5500 on SPI0, wired as on WIZnet's
//! W5500-EVB-Pico: SCK GP18, MOSI GP19, MISO GP16, CS GP17, INT GP21, RESET GP20.
//!
//! [`start`] is an app's whole start-up: clocks, SPI, the W5500, the network stack with DHCP,
//! and the wait for the lease. [`Rng`] gives depot its handshake nonces.
#![no_std]

use defmt::info;
use embassy_executor::Spawner;
use embassy_net::{Config, Stack, StackResources};
use embassy_net_wiznet::chip::W5500;
use embassy_net_wiznet::{Device, Runner, State};
use embassy_rp::clocks::RoscRng;
use embassy_rp::gpio::{Input, Level, Output, Pull};
use embassy_rp::peripherals::SPI0;
use embassy_rp::spi::{Async, Config as SpiConfig, Spi};
use embassy_rp::{bind_interrupts, dma};
use embassy_time::Delay;
use embedded_hal_bus::spi::ExclusiveDevice;
use static_cell::StaticCell;

pub use depot_embassy;

bind_interrupts!(struct Irqs {
    DMA_IRQ_0 => dma::InterruptHandler<embassy_rp::peripherals::DMA_CH0>,
        dma::InterruptHandler<embassy_rp::peripherals::DMA_CH1>;
});

/// The MAC address the W5500 uses. A locally administered address: give each board on a
/// network its own (the W5500 has none of its own).
pub const MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x00, 0x53, 0x01];

type Spi0 = ExclusiveDevice<Spi<'static, SPI0, Async>, Output<'static>, Delay>;
type W5500Runner = Runner<'static, W5500, Spi0, Input<'static>, Output<'static>>;

#[embassy_executor::task]
async fn ethernet_task(runner: W5500Runner) -> ! {
    runner.run().await
}

#[embassy_executor::task]
async fn net_task(mut runner: embassy_net::Runner<'static, Device<'static>>) -> ! {
    runner.run().await
}

/// Stack resources for `N` sockets plus the DHCP client's, in a `static` of their own:
/// `depot_rp2040_w5500::sockets!(1)` for an app with one TCP socket.
#[macro_export]
macro_rules! sockets {
    ($n:expr) => {{
        static RESOURCES: ::static_cell::StaticCell<::embassy_net::StackResources<{ $n + 1 }>> =
            ::static_cell::StaticCell::new();
        RESOURCES.init(::embassy_net::StackResources::new())
    }};
}

/// Starts the board: clocks, SPI0 and the W5500, the network stack (DHCP, `resources` from
/// [`sockets!`]) and its tasks; returns once DHCP has configured the stack. Panics when the
/// W5500 does not answer: nothing can work without it.
pub async fn start<const SOCK: usize>(
    spawner: Spawner,
    resources: &'static mut StackResources<SOCK>,
) -> Stack<'static> {
    let p = embassy_rp::init(Default::default());
    let mut spi_config = SpiConfig::default();
    spi_config.frequency = 50_000_000;
    let spi = Spi::new(
        p.SPI0, p.PIN_18, p.PIN_19, p.PIN_16, p.DMA_CH0, p.DMA_CH1, Irqs, spi_config,
    );
    let cs = Output::new(p.PIN_17, Level::High);
    let int = Input::new(p.PIN_21, Pull::Up);
    let reset = Output::new(p.PIN_20, Level::High);
    let spi = ExclusiveDevice::new(spi, cs, Delay).unwrap();

    static STATE: StaticCell<State<8, 8>> = StaticCell::new();
    let (device, runner) = embassy_net_wiznet::new(MAC, STATE.init(State::new()), spi, int, reset)
        .await
        .expect("W5500 not found on SPI0");
    spawner.spawn(ethernet_task(runner).unwrap());

    let seed = RoscRng.next_u64();
    let (stack, runner) =
        embassy_net::new(device, Config::dhcpv4(Default::default()), resources, seed);
    spawner.spawn(net_task(runner).unwrap());

    stack.wait_config_up().await;
    if let Some(config) = stack.config_v4() {
        info!("address {}", config.address);
    }
    stack
}

/// depot's handshake nonces from the RP2040's ring oscillator (its only entropy source; the
/// nonces need to be fresh, not secret: see `depot_embassy::Entropy`).
pub struct Rng;

impl depot_embassy::Entropy for Rng {
    fn fill(&mut self, buf: &mut [u8]) {
        RoscRng.fill_bytes(buf)
    }
}
