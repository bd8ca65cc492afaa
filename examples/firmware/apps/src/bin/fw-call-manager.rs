//! depot manager firmware answering a registered call: `area` takes `[w, h]` (two `u32`s) and
//! answers `w * h`, or the error "too large" when that does not fit a `u32`. The handler is
//! async and runs beside the sockets. Host clients reach it on port 5555 through QEMU's
//! hostfwd; remote shutdown is allowed, so the built-in `close` call stops it.
//!
//! Completion rule: once stopped it prints `fw-call-manager: answered N calls, failed F` and
//! exits 0; exits 1 if nothing stops it within 90 s. Whether the answers were right is the
//! host's to judge.
#![no_std]
#![no_main]

use depot_board::{net, println};
use depot_embassy::depot_core::value;
use depot_embassy::depot_core::wire::ObjectKind;
use depot_embassy::{
    CallHandler, ManagerResources, ObjectSlot, QueueMode, QueueSpec, Server, ServerConfig,
};
use depot_firmware_apps::entropy::TestEntropy;
use depot_firmware_apps::AUTHKEY;
use embassy_executor::Spawner;
use embassy_net::Stack;
use embassy_time::Duration;
use panic_semihosting as _;
use static_cell::StaticCell;

const NAME: &str = "fw-call-manager";
const DEADLINE: Duration = Duration::from_secs(90);
const SOCKETS: usize = 2;
/// The largest request and response, in bytes.
const MAX_CALL: usize = 32;

static SERVER: StaticCell<ManagerResources<'static, SOCKETS>> = StaticCell::new();
static OBJECTS: StaticCell<[ObjectSlot<'static>; 1]> = StaticCell::new();
static ENTROPY: StaticCell<TestEntropy> = StaticCell::new();

#[embassy_executor::main(entry = "cortex_m_rt::entry", executor = "depot_board::Executor")]
async fn main(spawner: Spawner) {
    depot_board::run(spawner, depot_board::sockets!(SOCKETS), NAME, DEADLINE, job).await
}

/// Counts what it answered.
struct Area {
    answered: u32,
    failed: u32,
}

impl CallHandler for Area {
    async fn call(
        &mut self,
        _name: &str,
        request: &[u8],
        response: &mut [u8],
    ) -> Result<usize, &'static str> {
        let answer = value::from_slice::<(u32, u32)>(request)
            .map_err(|_| "the request is not [w, h]")
            .and_then(|(w, h)| w.checked_mul(h).ok_or("too large"));
        let area = match answer {
            Ok(area) => area,
            Err(e) => {
                self.failed += 1;
                return Err(e);
            }
        };
        self.answered += 1;
        value::to_slice(&area, response).map_err(|_| "response buffer too small")
    }
}

async fn job(stack: Stack<'static>) -> Result<(), &'static str> {
    let spec = QueueSpec {
        capacity: 1,
        max_item: MAX_CALL as u32,
        mode: QueueMode::Value,
    };
    let slot = ObjectSlot::declare("area", ObjectKind::Call, spec, &mut [][..])
        .map_err(|_| "the call cannot be declared")?;
    let mut config = ServerConfig::new(net::GUEST_PORT);
    config.manager.allow_remote_shutdown = true;
    let mut server = Server::new(
        stack,
        config,
        AUTHKEY,
        OBJECTS.init([slot]),
        ENTROPY.init(TestEntropy::from_board()),
        SERVER.init(ManagerResources::new()),
    );
    println!("{}: listening on {}", NAME, net::GUEST_PORT);
    let mut area = Area {
        answered: 0,
        failed: 0,
    };
    let (mut request, mut response) = ([0u8; MAX_CALL], [0u8; MAX_CALL]);
    server
        .run_with_calls(&mut area, &mut request, &mut response)
        .await;
    println!(
        "{}: answered {} calls, failed {}",
        NAME, area.answered, area.failed
    );
    Ok(())
}
