//! depot-bench: depot side by side with raw TCP, Python's BaseManager and Redis.
//!
//! Layout: [`system`] is the interface a system implements (one method per workload);
//! [`systems`] holds one module per system; [`workloads`] defines (a)–(g) and runs them;
//! [`report`] prints the tables and the JSON; [`threaded`] drives systems whose clients are
//! threads; [`holder`] holds idle connections in a child process; [`child`] and [`os`] are plumbing.

mod child;
mod cli;
mod holder;
mod os;
mod report;
mod soak;
mod stats;
mod system;
mod systems;
mod threaded;
mod workloads;

use std::process::ExitCode;

use anyhow::{bail, Result};

use cli::{Invocation, Options};
use workloads::{Cell, Contender, Plan, Workload};

fn main() -> ExitCode {
    let outcome = cli::parse(std::env::args().skip(1)).and_then(|invocation| match invocation {
        Invocation::Help => {
            println!("{}", cli::USAGE);
            Ok(true)
        }
        Invocation::Hold(args) => holder::run(&args).map(|()| true),
        Invocation::DepotManager(args) => systems::depot::run_manager(&args).map(|()| true),
        Invocation::RawTcpServer => systems::raw_tcp_proc::run_server().map(|()| true),
        Invocation::Bench(options) => bench(&options),
    });
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("depot-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Run the benchmark; `Ok(false)` when some figure failed.
fn bench(options: &Options) -> Result<bool> {
    if let Some(secs) = options.soak {
        return soak::run(secs, options.soak_clients.unwrap_or(soak::DEFAULT_CLIENTS));
    }
    let mut plan = if options.quick {
        Plan::quick()
    } else {
        Plan::full()
    };
    if let Some(runs) = options.runs {
        plan.runs = runs;
    }

    let mut systems = systems::all();
    if let Some(only) = &options.only {
        for name in only {
            if !systems.iter().any(|s| s.name() == name) {
                let known: Vec<_> = systems.iter().map(|s| s.name()).collect();
                bail!("unknown system {name:?} (known: {})", known.join(", "));
            }
        }
        systems.retain(|s| only.iter().any(|name| name == s.name()));
    }
    let mut contenders: Vec<Contender> = systems
        .into_iter()
        .map(|mut system| Contender {
            available: system.check(),
            system,
        })
        .collect();

    let workloads: Vec<Workload> = Workload::all(&plan)
        .into_iter()
        .filter(|w| {
            options
                .workloads
                .as_ref()
                .is_none_or(|letters| letters.contains(&w.letter()))
        })
        .collect();

    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mode = if plan.quick { "quick" } else { "full" };
    eprintln!(
        "depot-bench: {mode} mode, {} run(s) per figure, {cpus} CPUs",
        plan.runs
    );
    let rows = workloads::run_all(&mut contenders, &workloads, &plan);

    println!(
        "depot-bench — {mode} mode, {} run(s) per figure: median, spread min–max; {cpus} CPUs, loopback",
        plan.runs
    );
    println!("ratios are this system's value ÷ the reference's (depot, raw-tcp, python); the clock starts at a barrier");
    for contender in &contenders {
        let how = match &contender.available {
            Ok(()) => contender.system.clients().to_owned(),
            Err(reason) => format!("skipped: {reason}"),
        };
        println!("  {:<18} {how}", contender.system.name());
    }
    print!("{}", report::render(&rows));

    if let Some(path) = &options.json {
        report::write_json(path, &rows)?;
        eprintln!("depot-bench: wrote {}", path.display());
    }
    Ok(!rows.iter().any(|r| matches!(r.cell, Cell::Failed(_))))
}
