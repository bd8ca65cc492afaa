//! depot client firmware with a WRONG authkey: connecting to the host manager at
//! 10.0.2.100:7777 must fail with `AuthFailed`. Exits 0 when it does (the expected outcome),
//! 1 when the connection succeeds or fails any other way.
#![no_std]
#![no_main]

use core::pin::pin;

use depot_board::{net, println};
use depot_embassy::depot_core::Error as DepotError;
use depot_embassy::{Client, ClientBuffers, Error};
use depot_firmware_apps::entropy::TestEntropy;
use depot_firmware_apps::AUTHKEY;
use embassy_executor::Spawner;
use embassy_net::tcp::TcpSocket;
use embassy_net::{Stack, StackResources};
use embassy_time::Duration;
use panic_semihosting as _;
use static_cell::StaticCell;

const NAME: &str = "fw-badkey";
const DEADLINE: Duration = Duration::from_secs(30);
const DHCP_TIMEOUT: Duration = Duration::from_secs(10);

static RESOURCES: StaticCell<StackResources<2>> = StaticCell::new();
static BUFFERS: StaticCell<ClientBuffers> = StaticCell::new();

#[embassy_executor::main]
async fn main(spawner: Spawner) {
    let board = depot_board::init();
    let stack = net::start(
        spawner,
        board.nic,
        RESOURCES.init(StackResources::new()),
        board.seed,
    );
    // Pinned here, so `run` holds a pointer to the job's state rather than a second copy of it.
    depot_board::run(NAME, DEADLINE, pin!(job(stack))).await
}

/// The real key with a byte changed: as close as a wrong key gets.
fn wrong_key(key: &mut [u8; 64]) -> &[u8] {
    // At least one byte, so even an empty real key has a wrong one.
    let len = AUTHKEY.len().clamp(1, key.len());
    key[..AUTHKEY.len().min(len)].copy_from_slice(&AUTHKEY[..AUTHKEY.len().min(len)]);
    key[0] ^= 0x20;
    &key[..len]
}

async fn job(stack: Stack<'static>) -> Result<(), &'static str> {
    net::wait_for_dhcp(stack, DHCP_TIMEOUT)
        .await
        .ok_or("no DHCP lease")?;
    let mut rng = TestEntropy::from_board();
    let (mut rx, mut tx) = ([0u8; 1024], [0u8; 1024]);
    let socket = TcpSocket::new(stack, &mut rx, &mut tx);
    let mut key = [0u8; 64];
    let outcome = Client::connect(
        socket,
        (net::HOST, net::HOST_PORT),
        wrong_key(&mut key),
        &mut rng,
        BUFFERS.init(ClientBuffers::new()),
    )
    .await;
    match outcome {
        Err(Error::Depot(DepotError::AuthFailed)) => {
            println!("{}: got AuthFailed, as expected", NAME);
            Ok(())
        }
        Err(e) => {
            println!("{}: expected AuthFailed, got {}", NAME, e);
            Err("wrong error")
        }
        Ok(_) => Err("connected with a wrong authkey"),
    }
}
