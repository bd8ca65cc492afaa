//! Host integration tests of depot: real processes over real sockets.
//!
//! The seed scenario with the examples as processes, many producers and consumers, blocking
//! across processes, wrong keys, killed clients, hostile bytes on the wire, and shutdown.
//! This target runs its own small harness (`harness = false` in Cargo.toml) because the test
//! binary doubles as every child process (see `harness` and `roles`).

// Every example declares `mod common;`, so compiled in here it is loaded once per example.
#![allow(clippy::duplicate_mod)]

use std::process::ExitCode;
use std::time::Duration;

use depot::{Client, Manager, ManagerBuilder, ManagerHandle, QueueStat};

mod harness;
mod raw;
mod roles;

mod blocking;
mod faults;
mod seed;
mod shutdown;

// The examples, compiled into this binary so that children can run them.
#[path = "../../examples/all_in_one.rs"]
mod ex_all_in_one;
#[path = "../../examples/close.rs"]
mod ex_close;
#[path = "../../examples/consumer.rs"]
mod ex_consumer;
#[path = "../../examples/demo.rs"]
mod ex_demo;
#[path = "../../examples/manager.rs"]
mod ex_manager;
#[path = "../../examples/producer.rs"]
mod ex_producer;

/// The authkey of the managers the tests start themselves.
pub const KEY: &str = "test-authkey";
/// A generous bound for anything that should happen "soon".
pub const SOON: Duration = Duration::from_secs(10);

/// A builder for a manager on a free loopback port with [`KEY`].
pub fn builder() -> ManagerBuilder {
    Manager::builder().listen("127.0.0.1:0").authkey(KEY)
}

/// A started manager serving `queues` (name, capacity) of any bytes: these tests move byte
/// items (the value model has tests of its own).
pub fn start(queues: &[(&str, u32)]) -> ManagerHandle {
    let mut b = builder();
    for (name, cap) in queues {
        b = b.raw_queue(name, *cap);
    }
    b.start().expect("start the manager")
}

/// A client of `m` with the right key.
pub fn client(m: &ManagerHandle) -> Client {
    Client::connect(m.address(), KEY).expect("connect")
}

/// The stat line of queue `name`.
pub fn stat(c: &Client, name: &str) -> QueueStat {
    c.stat()
        .expect("stat")
        .into_iter()
        .find(|q| q.name == name)
        .unwrap_or_else(|| panic!("no queue {name} in stat"))
}

/// Connections the manager has open now.
pub fn connections(c: &Client) -> u32 {
    c.status().expect("status").connections
}

fn main() -> ExitCode {
    if let Ok(role) = std::env::var(harness::ROLE_ENV) {
        return roles::play(&role);
    }
    let tests: &[harness::Test] = &[
        (
            "seed::scenario_with_example_processes",
            seed::scenario_with_example_processes,
        ),
        (
            "seed::all_in_one_with_consumer",
            seed::all_in_one_with_consumer,
        ),
        (
            "seed::demo_reports_matching_checksums",
            seed::demo_reports_matching_checksums,
        ),
        (
            "seed::four_by_four_processes_exactly_once",
            seed::four_by_four_processes_exactly_once,
        ),
        (
            "seed::examples_report_wrong_key_and_refused",
            seed::examples_report_wrong_key_and_refused,
        ),
        (
            "blocking::get_in_one_process_woken_by_put_from_another",
            blocking::get_in_one_process_woken_by_put_from_another,
        ),
        (
            "blocking::get_and_put_timeouts",
            blocking::get_and_put_timeouts,
        ),
        (
            "blocking::timeout_in_a_child_process",
            blocking::timeout_in_a_child_process,
        ),
        (
            "blocking::join_and_task_done_across_processes",
            blocking::join_and_task_done_across_processes,
        ),
        (
            "faults::wrong_authkey_is_clear_and_others_are_served",
            faults::wrong_authkey_is_clear_and_others_are_served,
        ),
        (
            "faults::client_killed_mid_frame",
            faults::client_killed_mid_frame,
        ),
        (
            "faults::client_killed_while_blocked",
            faults::client_killed_while_blocked,
        ),
        (
            "faults::garbage_bytes_are_dropped",
            faults::garbage_bytes_are_dropped,
        ),
        (
            "faults::oversized_length_prefix_is_dropped",
            faults::oversized_length_prefix_is_dropped,
        ),
        (
            "faults::slow_clients_are_dropped",
            faults::slow_clients_are_dropped,
        ),
        (
            "faults::client_that_never_reads_is_dropped",
            faults::client_that_never_reads_is_dropped,
        ),
        (
            "shutdown::remote_shutdown_allowed",
            shutdown::remote_shutdown_allowed,
        ),
        (
            "shutdown::remote_shutdown_refused",
            shutdown::remote_shutdown_refused,
        ),
        (
            "shutdown::graceful_shutdown_with_blocked_clients",
            shutdown::graceful_shutdown_with_blocked_clients,
        ),
    ];
    if harness::run(tests) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
