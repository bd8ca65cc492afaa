//! Building the embassy-net stack on the LAN9118 and waiting for QEMU's DHCP server.

use embassy_executor::Spawner;
use embassy_net::{Config, Ipv4Address, Runner, Stack, StackResources, StaticConfigV4};
use embassy_time::{with_timeout, Duration};

use crate::lan9118::Lan9118;

/// The host, as seen from the guest through QEMU's `guestfwd` (user-mode networking).
pub const HOST: Ipv4Address = Ipv4Address::new(10, 0, 2, 100);
/// Port of `guestfwd` towards the host's test server (the test picks the host side port).
pub const HOST_PORT: u16 = 7777;
/// Port the guest listens on for `hostfwd` connections from the host.
pub const GUEST_PORT: u16 = 5555;

/// Drives the stack: receives, transmits, runs DHCP and timers. Never returns.
#[embassy_executor::task]
async fn net_task(mut runner: Runner<'static, Lan9118>) -> ! {
    runner.run().await
}

/// Builds the stack with DHCP on `nic` and spawns the task that runs it.
///
/// `resources` holds one socket slot per socket the app opens, plus one for DHCP. `seed`
/// randomises local ports and TCP sequence numbers (see [`crate::entropy`]).
pub fn start<const SOCK: usize>(
    spawner: Spawner,
    nic: Lan9118,
    resources: &'static mut StackResources<SOCK>,
    seed: u64,
) -> Stack<'static> {
    let (stack, runner) =
        embassy_net::new(nic, Config::dhcpv4(Default::default()), resources, seed);
    spawner.spawn(net_task(runner).expect("net task already spawned"));
    stack
}

/// How long [`up`] waits for QEMU's DHCP server, which answers in milliseconds.
pub const DHCP_TIMEOUT: Duration = Duration::from_secs(10);

/// Waits until DHCP has configured the stack: its address, or `"no DHCP lease"` after
/// [`DHCP_TIMEOUT`].
pub async fn up(stack: Stack<'_>) -> Result<StaticConfigV4, &'static str> {
    wait_for_dhcp(stack, DHCP_TIMEOUT)
        .await
        .ok_or("no DHCP lease")
}

/// Waits until DHCP has configured the stack; `None` after `timeout`.
pub async fn wait_for_dhcp(stack: Stack<'_>, timeout: Duration) -> Option<StaticConfigV4> {
    with_timeout(timeout, stack.wait_config_up()).await.ok()?;
    stack.config_v4()
}
