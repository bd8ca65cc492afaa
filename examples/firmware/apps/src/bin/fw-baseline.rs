//! Baseline firmware: the same board and network stack as the depot apps, without depot.
//!
//! Gets a DHCP lease, connects to the host's test server through QEMU's guestfwd, sends
//! `hello from fw-baseline`, prints the reply line and exits 0; exits 1 on any failure or after
//! 20 s. Its size is the footprint baseline the depot apps are compared against.
#![no_std]
#![no_main]

use depot_board::{net, println};
use embassy_executor::Spawner;
use embassy_net::tcp::TcpSocket;
use embassy_net::Stack;
use embassy_time::Duration;
use embedded_io_async::Write;
use panic_semihosting as _;
// With the apps' `defmt` feature embassy-net logs through defmt: every image needs the logger.
#[cfg(feature = "defmt")]
use defmt_semihosting as _;

const NAME: &str = "fw-baseline";
const DEADLINE: Duration = Duration::from_secs(20);
const IO_TIMEOUT: Duration = Duration::from_secs(10);

#[embassy_executor::main(entry = "cortex_m_rt::entry", executor = "depot_board::Executor")]
async fn main(spawner: Spawner) {
    depot_board::run(spawner, depot_board::sockets!(1), NAME, DEADLINE, job).await
}

async fn job(stack: Stack<'static>) -> Result<(), &'static str> {
    let config = stack.config_v4().ok_or("no IPv4 configuration")?;
    println!("{}: address {}", NAME, config.address);

    let mut rx_buffer = [0u8; 1024];
    let mut tx_buffer = [0u8; 1024];
    let mut socket = TcpSocket::new(stack, &mut rx_buffer, &mut tx_buffer);
    socket.set_timeout(Some(IO_TIMEOUT));
    socket
        .connect((net::HOST, net::HOST_PORT))
        .await
        .map_err(|_| "connect failed")?;
    socket
        .write_all(b"hello from fw-baseline\n")
        .await
        .map_err(|_| "write failed")?;
    socket.flush().await.map_err(|_| "flush failed")?;

    let mut line = [0u8; 128];
    let len = read_line(&mut socket, &mut line).await?;
    let reply = core::str::from_utf8(&line[..len]).map_err(|_| "reply is not UTF-8")?;
    println!("{}: reply: {}", NAME, reply);
    socket.close();
    Ok(())
}

/// Reads up to the first `\n` (not included); fails if the peer closes first or the line
/// does not fit.
async fn read_line(socket: &mut TcpSocket<'_>, line: &mut [u8]) -> Result<usize, &'static str> {
    let mut len = 0;
    loop {
        if len == line.len() {
            return Err("reply line too long");
        }
        let n = socket
            .read(&mut line[len..])
            .await
            .map_err(|_| "read failed")?;
        if n == 0 {
            return Err("connection closed before a full line");
        }
        if let Some(end) = line[len..len + n].iter().position(|&b| b == b'\n') {
            return Ok(len + end);
        }
        len += n;
    }
}
