//! depot producer on an RP2040 + W5500: puts a counter (`u32` values) into `task_queue` on a
//! depot manager (or a Python `BaseManager` served by `depot serve`) once a second, forever;
//! reconnects after an error. Set `MANAGER` and `AUTHKEY` for your network.
#![no_std]
#![no_main]

use defmt::{info, warn};
use depot_embassy::{Client, ClientBuffers, Error, Wait};
use depot_rp2040_w5500::{sockets, Rng};
use embassy_executor::Spawner;
use embassy_net::tcp::TcpSocket;
use embassy_net::{Ipv4Address, Stack};
use embassy_time::Timer;
use {defmt_rtt as _, panic_probe as _};

/// Where `depot serve` listens.
const MANAGER: (Ipv4Address, u16) = (Ipv4Address::new(192, 168, 1, 10), 5000);
const AUTHKEY: &[u8] = b"producer";
const QUEUE: &str = "task_queue";

#[embassy_executor::main]
async fn main(spawner: Spawner) {
    let stack = depot_rp2040_w5500::start(spawner, sockets!(1)).await;
    let mut n = 0;
    loop {
        if let Err(e) = produce(stack, &mut n).await {
            warn!("depot: {}", e);
        }
        Timer::after_secs(5).await;
    }
}

/// Connects and puts `n`, `n + 1`, ... until an error.
async fn produce(stack: Stack<'static>, n: &mut u32) -> Result<(), Error> {
    let (mut rx, mut tx) = ([0; 1024], [0; 1024]);
    let mut buffers = ClientBuffers::<512, 2>::new();
    let socket = TcpSocket::new(stack, &mut rx, &mut tx);
    let client = Client::connect(socket, MANAGER, AUTHKEY, &mut Rng, &mut buffers).await?;
    let queue = client.queue::<u32, 8>(QUEUE).await?;
    info!("connected; putting into {}", QUEUE);
    loop {
        queue.put(n, Wait::Millis(10_000)).await?;
        *n += 1;
        Timer::after_secs(1).await;
    }
}
