//! The benchmarked systems, one module each, listed in [`all`].

pub mod depot;
pub mod depot_acked;
pub mod depot_tokio;
pub mod jetstream;
pub mod python;
pub mod raw_tcp;
pub mod raw_tcp_proc;
pub mod redis;
pub mod resp;

use crate::system::System;

/// Every system, in report order.
pub fn all() -> Vec<Box<dyn System>> {
    vec![
        Box::new(raw_tcp::RawTcp),
        Box::new(raw_tcp_proc::RawTcpProc),
        Box::new(python::Python::new()),
        Box::new(python::Python::on_depot()),
        Box::new(redis::Redis::new()),
        Box::new(depot::Depot),
        Box::new(depot::DepotMac),
        Box::new(depot::DepotSleep),
        Box::new(depot_tokio::DepotTokio { shared: false }),
        Box::new(depot_tokio::DepotTokio { shared: true }),
        Box::new(depot_acked::DepotAcked { confirmed: false }),
        Box::new(depot_acked::DepotAcked { confirmed: true }),
        Box::new(jetstream::DepotJetStream { read_ahead: true }),
        Box::new(jetstream::DepotJetStream { read_ahead: false }),
        Box::new(jetstream::NatsJetStream),
    ]
}
