//! depot producer firmware with a named key of its own (`KEY_NAME`, `KEY`) instead of the
//! default key: puts `ITEMS` `u32` items (`1`..=`ITEMS`) into `task_queue` on the host manager
//! at 10.0.2.100:7777, then checks that its key may not take from the queue (`get` fails with
//! `NotAllowed`) and exits 0. Any other outcome exits 1 with `fw-named-key: WHAT: ERROR`
//! printed; a manager that does not know the key gives `fw-named-key: connect refused:
//! AuthFailed`.
//!
//! Build-time settings beyond the apps' own: `DEPOT_FW_KEY_NAME` [`sensor-7`] and
//! `DEPOT_FW_KEY` [`sensor-7-secret-key`].
#![no_std]
#![no_main]

use depot_board::println;
use depot_embassy::depot_core::client::ClientConfig;
use depot_embassy::depot_core::keyring::KeyName;
use depot_embassy::depot_core::Error as DepotError;
use depot_embassy::{Error, Wait};
use depot_firmware_apps::{connect_config, report, ClientMemory, ITEMS, QUEUE};
use embassy_executor::Spawner;
use embassy_net::Stack;
use embassy_time::Duration;
use panic_semihosting as _;
use static_cell::StaticCell;

const NAME: &str = "fw-named-key";
const DEADLINE: Duration = Duration::from_secs(30);
const PUT_WAIT: Wait = Wait::Millis(10_000);

/// The key's name, as the manager's keys file has it.
const KEY_NAME: &str = match option_env!("DEPOT_FW_KEY_NAME") {
    Some(name) => name,
    None => "sensor-7",
};

/// The key's secret.
const KEY: &[u8] = match option_env!("DEPOT_FW_KEY") {
    Some(key) => key.as_bytes(),
    None => b"sensor-7-secret-key",
};

static MEMORY: StaticCell<ClientMemory> = StaticCell::new();

#[embassy_executor::main(entry = "cortex_m_rt::entry", executor = "depot_board::Executor")]
async fn main(spawner: Spawner) {
    depot_board::run(spawner, depot_board::sockets!(1), NAME, DEADLINE, job).await
}

async fn job(stack: Stack<'static>) -> Result<(), &'static str> {
    let key_name = KeyName::new(KEY_NAME).ok_or("bad DEPOT_FW_KEY_NAME")?;
    let config = ClientConfig {
        key_name,
        ..ClientConfig::default()
    };
    let client = match connect_config(stack, KEY, MEMORY.init(ClientMemory::new()), config).await {
        Ok(client) => client,
        // What the QEMU test looks for when the manager does not know the key.
        Err(Error::Depot(DepotError::AuthFailed)) => {
            println!("{}: connect refused: AuthFailed", NAME);
            return Err("connect");
        }
        Err(e) => return Err(report(NAME, "connect", e)),
    };
    println!("{}: connected as {}", NAME, KEY_NAME);
    let queue = client
        .queue::<u32, 8>(QUEUE)
        .await
        .map_err(|e| report(NAME, "open", e))?;
    for n in 1..=ITEMS {
        queue
            .put(&n, PUT_WAIT)
            .await
            .map_err(|e| report(NAME, "put", e))?;
    }
    println!("{}: put {} items into {}", NAME, ITEMS, QUEUE);
    // The key may put but not take: the manager must refuse the get and change nothing.
    match queue.get(Wait::Millis(0)).await {
        Err(Error::Depot(DepotError::NotAllowed)) => println!("{}: get refused: NotAllowed", NAME),
        Err(e) => return Err(report(NAME, "get (expected NotAllowed)", e)),
        Ok(_) => return Err("a put-only key took an item"),
    }
    client.close().await;
    Ok(())
}
