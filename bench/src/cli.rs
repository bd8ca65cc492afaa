//! Command-line parsing, by hand (the harness has few options).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use crate::holder::{self, HoldArgs};
use crate::systems::{depot, raw_tcp_proc};

/// Usage text for `--help`.
pub const USAGE: &str = "\
depot-bench: depot side by side with raw TCP, Python's BaseManager and Redis on this machine

usage: depot-bench [--quick] [--json FILE] [--only SYSTEM,...] [--workload LETTERS] [--runs N]
       depot-bench --soak SECS [--soak-clients N]

  --quick            tiny counts and one run per figure (proves the harness works)
  --json FILE        also write the rows as a JSON array to FILE
  --only LIST        systems to run, comma-separated: raw-tcp, raw-tcp-proc,
                     python, redis, depot, depot-mac, depot-sleep, depot-tokio,
                     depot-tokio-shared, py-on-depot,
                     depot-acked, depot-acked-sync, depot+jetstream,
                     depot+jetstream-direct, nats-jetstream
  --workload LIST    workloads to run, letters a–h, e.g. a,c,f (default: all)
  --runs N           runs per figure (default: 3, or 1 with --quick)
  --soak SECS        instead: a reliability soak of the depot manager for SECS seconds
                     (reconnecting producers and consumers; fails on a lost or duplicated
                     item or on growing memory; see RELIABILITY.md)
  --soak-clients N   producers and consumers each in the soak (default: 8)

environment: DEPOT_BENCH_PYTHON (python3), DEPOT_BENCH_REDIS_SERVER (redis-server on PATH),
             DEPOT_BENCH_NATS_SERVER (nats-server on PATH)";

/// Options of a benchmark run.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// `--quick`.
    pub quick: bool,
    /// `--json FILE`.
    pub json: Option<PathBuf>,
    /// `--only`: system names.
    pub only: Option<Vec<String>>,
    /// `--workload`: letters.
    pub workloads: Option<Vec<char>>,
    /// `--runs`.
    pub runs: Option<usize>,
    /// `--soak`: how long.
    pub soak: Option<std::time::Duration>,
    /// `--soak-clients`.
    pub soak_clients: Option<usize>,
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Invocation {
    /// Benchmark.
    Bench(Options),
    /// Print usage.
    Help,
    /// The hidden idle-connection holder (see [`crate::holder`]).
    Hold(HoldArgs),
    /// The hidden depot manager process (see [`crate::systems::depot`]): its arguments.
    DepotManager(Vec<String>),
    /// The hidden one-thread raw TCP queue server process (see [`crate::systems::raw_tcp_proc`]).
    RawTcpServer,
}

/// Parse the arguments after the program name.
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Invocation> {
    let mut args = args.into_iter().peekable();
    if args.peek().map(String::as_str) == Some(holder::SUBCOMMAND) {
        args.next();
        return parse_hold(args).map(Invocation::Hold);
    }
    if args.peek().map(String::as_str) == Some(depot::SUBCOMMAND) {
        args.next();
        return Ok(Invocation::DepotManager(args.collect()));
    }
    if args.peek().map(String::as_str) == Some(raw_tcp_proc::SUBCOMMAND) {
        return Ok(Invocation::RawTcpServer);
    }
    let mut options = Options::default();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => {
                (flag.to_owned(), Some(value.to_owned()))
            }
            _ => (arg.clone(), None),
        };
        let mut value = || -> Result<String> {
            inline
                .clone()
                .or_else(|| args.next())
                .with_context(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(Invocation::Help),
            "--quick" => options.quick = true,
            "--json" => options.json = Some(PathBuf::from(value()?)),
            "--only" => options.only = Some(list(&value()?)),
            "--workload" | "--workloads" => {
                let letters = list(&value()?);
                let mut chars = Vec::new();
                for letter in letters {
                    match letter.as_str() {
                        "a" | "b" | "c" | "d" | "e" | "f" | "g" | "h" => {
                            chars.extend(letter.chars())
                        }
                        other => bail!("unknown workload {other:?} (letters a–h)"),
                    }
                }
                options.workloads = Some(chars);
            }
            "--runs" => {
                let runs: usize = value()?.parse().context("--runs takes a number")?;
                if runs == 0 {
                    bail!("--runs must be at least 1");
                }
                options.runs = Some(runs);
            }
            "--soak" => {
                let secs: f64 = value()?.parse().context("--soak takes seconds")?;
                if !(secs > 0.0 && secs.is_finite()) {
                    bail!("--soak takes a positive number of seconds");
                }
                options.soak = Some(std::time::Duration::from_secs_f64(secs));
            }
            "--soak-clients" => {
                let n: usize = value()?.parse().context("--soak-clients takes a number")?;
                if n == 0 {
                    bail!("--soak-clients must be at least 1");
                }
                options.soak_clients = Some(n);
            }
            other => bail!("unknown argument {other:?}\n\n{USAGE}"),
        }
    }
    Ok(Invocation::Bench(options))
}

fn parse_hold(mut args: impl Iterator<Item = String>) -> Result<HoldArgs> {
    let mut hold = HoldArgs::default();
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--kind" => hold.kind = value,
            "--addr" => hold.addr = value,
            "--key" => hold.key = value,
            "--count" => hold.count = value.parse().context("--count takes a number")?,
            other => bail!("unknown holder argument {other:?}"),
        }
    }
    Ok(hold)
}

fn list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bench(args: &[&str]) -> Options {
        match parse(args.iter().map(|s| s.to_string())).unwrap() {
            Invocation::Bench(options) => options,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn options() {
        let options = bench(&[
            "--quick",
            "--json",
            "out.json",
            "--only=python,redis",
            "--workload",
            "a,f",
        ]);
        assert!(options.quick);
        assert_eq!(options.json, Some(PathBuf::from("out.json")));
        assert_eq!(options.only, Some(vec!["python".into(), "redis".into()]));
        assert_eq!(options.workloads, Some(vec!['a', 'f']));
        assert_eq!(bench(&[]), Options::default());
    }

    #[test]
    fn rejects_unknown() {
        assert!(parse(["--fast".to_string()]).is_err());
        assert!(parse(["--workload".to_string(), "z".to_string()]).is_err());
        assert!(parse(["--json".to_string()]).is_err());
    }

    #[test]
    fn holder() {
        let args = [
            "__hold",
            "--kind",
            "redis",
            "--addr",
            "127.0.0.1:1",
            "--key",
            "k",
            "--count",
            "5",
        ];
        match parse(args.iter().map(|s| s.to_string())).unwrap() {
            Invocation::Hold(hold) => assert_eq!((hold.kind.as_str(), hold.count), ("redis", 5)),
            other => panic!("{other:?}"),
        }
    }
}
