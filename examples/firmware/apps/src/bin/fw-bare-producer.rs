//! depot producer without embassy: smoltcp driven by hand from a super-loop, depot through
//! `depot-smoltcp`. Puts `ITEMS` typed items (`1`..=`ITEMS`, `u32` values) into `task_queue`
//! on a host manager at 10.0.2.100:7777 (QEMU guestfwd), one put in flight at a time, then
//! exits 0; exits 1 on any error or after 30 s. The same check as fw-producer on the host.
//!
//! The loop sleeps with `wfi` until a frame arrives or the next deadline of smoltcp or depot;
//! the address is static (QEMU's user network: 10.0.2.15/24, gateway 10.0.2.2).
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use depot_board::lan9118;
use depot_board::phy::Phy;
use depot_board::{exit, println};
use depot_embassy::Entropy;
use depot_firmware_apps::entropy::TestEntropy;
use depot_firmware_apps::{AUTHKEY, ITEMS, QUEUE};
use depot_smoltcp::depot_core::client::{Event, RequestSlot};
use depot_smoltcp::depot_core::time::Instant;
use depot_smoltcp::depot_core::value;
use depot_smoltcp::depot_core::wire::{Handle, Op, Reply, Wait, NONCE_LEN};
use depot_smoltcp::Client;
use panic_semihosting as _;
use smoltcp::iface::{Config, Interface, SocketSet, SocketStorage};
use smoltcp::socket::tcp;
use smoltcp::wire::{EthernetAddress, IpAddress, IpCidr, Ipv4Address};

const NAME: &str = "fw-bare-producer";
const DEADLINE_MS: u64 = 30_000;
/// A put may wait this long for room (the host consumer may start after us).
const PUT_WAIT: Wait = Wait::Millis(10_000);
const ADDRESS: IpCidr = IpCidr::new(IpAddress::v4(10, 0, 2, 15), 24);
const GATEWAY: Ipv4Address = Ipv4Address::new(10, 0, 2, 2);
const MANAGER: (IpAddress, u16) = (IpAddress::v4(10, 0, 2, 100), 7777);

/// What the producer waits for.
enum Step {
    Handshake,
    Open(u32),
    Put { handle: Handle, n: u32, id: u32 },
}

fn now() -> Instant {
    Instant::from_millis(embassy_time::Instant::now().as_millis())
}

fn fail(why: &str) -> ! {
    println!("{}: FAIL: {}", NAME, why);
    exit(false)
}

#[entry]
fn main() -> ! {
    let board = depot_board::init();
    let mut device = Phy(board.nic);
    let mut config = Config::new(EthernetAddress(board.mac).into());
    config.random_seed = board.seed;
    let mut iface = Interface::new(config, &mut device, smol(now()));
    iface.update_ip_addrs(|addrs| addrs.push(ADDRESS).unwrap());
    iface.routes_mut().add_default_ipv4_route(GATEWAY).unwrap();

    let (mut tcp_rx, mut tcp_tx) = ([0u8; 1024], [0u8; 1024]);
    let mut storage = [SocketStorage::EMPTY; 1];
    let mut sockets = SocketSet::new(&mut storage[..]);
    let socket = sockets.add(tcp::Socket::new(
        tcp::SocketBuffer::new(&mut tcp_rx[..]),
        tcp::SocketBuffer::new(&mut tcp_tx[..]),
    ));
    let local_port = 49152 + (board.seed % 16384) as u16;
    if sockets
        .get_mut::<tcp::Socket>(socket)
        .connect(iface.context(), MANAGER, local_port)
        .is_err()
    {
        fail("connect");
    }

    let mut nonce = [0u8; NONCE_LEN];
    TestEntropy::from_board().fill(&mut nonce);
    let (mut rx, mut tx) = ([0u8; 512], [0u8; 512]);
    let mut slots = [RequestSlot::FREE; 1];
    let mut client = Client::new(socket, AUTHKEY, nonce, now(), &mut rx, &mut tx, &mut slots);

    let mut step = Step::Handshake;
    // The board's clock does not start at zero.
    let deadline = now().add_millis(DEADLINE_MS);
    loop {
        let t = now();
        if t > deadline {
            fail("timed out");
        }
        iface.poll(smol(t), &mut device, &mut sockets);
        client.poll(&mut sockets, t);
        // What happened, copied out of the event so the client can be called again.
        while let Some(event) = client.poll_event() {
            let (id, opened) = match event {
                Event::Connected => (None, None),
                Event::Reply {
                    id,
                    reply: Reply::Opened(info),
                } => (Some(id), Some(info.handle)),
                Event::Reply {
                    id,
                    reply: Reply::Done,
                } => (Some(id), None),
                Event::Reply {
                    reply: Reply::Error(code),
                    ..
                } => {
                    println!("{}: refused: {}", NAME, code);
                    fail("request refused")
                }
                Event::Reply { .. } => fail("unexpected reply"),
                Event::Closed(e) => {
                    println!("{}: closed: {}", NAME, e);
                    fail("connection closed")
                }
                _ => fail("unexpected event"),
            };
            step = match (step, id, opened) {
                (Step::Handshake, None, None) => {
                    println!("{}: connected", NAME);
                    Step::Open(send(&mut client, Op::Open { name: QUEUE }))
                }
                (Step::Open(want), Some(id), Some(handle)) if id == want => {
                    let id = put(&mut client, handle, 1);
                    Step::Put { handle, n: 1, id }
                }
                (
                    Step::Put {
                        handle,
                        n,
                        id: want,
                    },
                    Some(id),
                    None,
                ) if id == want => {
                    if n == ITEMS {
                        finish(&mut iface, &mut device, &mut sockets, socket);
                    }
                    let id = put(&mut client, handle, n + 1);
                    Step::Put {
                        handle,
                        n: n + 1,
                        id,
                    }
                }
                _ => fail("reply out of order"),
            };
        }
        // Transmit what the replies just queued before sleeping.
        client.poll(&mut sockets, now());
        iface.poll(smol(now()), &mut device, &mut sockets);
        sleep(&mut iface, &sockets, &client);
    }
}

fn send(client: &mut Client<'_>, op: Op<'_>) -> u32 {
    client
        .send(now(), op)
        .unwrap_or_else(|_| fail("send refused"))
}

fn put(client: &mut Client<'_>, handle: Handle, n: u32) -> u32 {
    let mut item = [0u8; 8];
    let len = value::to_slice(&n, &mut item).unwrap_or_else(|_| fail("encode"));
    send(
        client,
        Op::Put {
            handle,
            item: &item[..len],
            wait: PUT_WAIT,
        },
    )
}

/// Closes the connection (what was put is in) and ends the run with a pass.
fn finish(
    iface: &mut Interface,
    device: &mut Phy,
    sockets: &mut SocketSet<'_>,
    socket: smoltcp::iface::SocketHandle,
) -> ! {
    println!("{}: put {} items into {}", NAME, ITEMS, QUEUE);
    sockets.get_mut::<tcp::Socket>(socket).close();
    // Let the FIN go out before the board stops.
    let until = now().add_millis(200);
    while now() < until {
        iface.poll(smol(now()), device, sockets);
    }
    println!("{}: wake-ups: nic {}", NAME, lan9118::interrupts());
    println!("{}: PASS", NAME);
    exit(true)
}

/// Sleeps until a frame arrives or the earliest deadline of smoltcp and depot.
fn sleep(iface: &mut Interface, sockets: &SocketSet<'_>, client: &Client<'_>) {
    let t = now();
    let mut wake = t.add_millis(1000);
    if let Some(delay) = iface.poll_delay(smol(t), sockets) {
        wake = wake.min(t.add_millis(delay.total_millis()));
    }
    if let Some(at) = client.poll_at() {
        wake = wake.min(at);
    }
    if wake <= t {
        return;
    }
    // Masked, so a frame arriving after the check still ends the `wfi` (it pends the line).
    cortex_m::interrupt::free(|_| {
        if !lan9118::frames_waiting() && depot_board::alarm_at(wake.as_millis()) {
            cortex_m::asm::wfi();
        }
    });
}

fn smol(t: Instant) -> smoltcp::time::Instant {
    smoltcp::time::Instant::from_millis(t.as_millis() as i64)
}
