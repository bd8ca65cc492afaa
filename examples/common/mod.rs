//! What the host examples share: reading settings from `--flag VALUE` or the environment, and
//! a tiny random number generator (xorshift, seeded from the clock), so the examples need no
//! dependency beyond depot.
// Each example uses a different part of this module.
#![allow(dead_code)]

use std::time::{SystemTime, UNIX_EPOCH};

/// The seed scenario's manager address.
pub const DEFAULT_ADDR: &str = "127.0.0.1:5000";
/// The seed scenario's authkey.
pub const DEFAULT_AUTHKEY: &str = "producer";
/// The seed scenario's queue.
pub const QUEUE: &str = "task_queue";

/// The command line after the program name, checked against the flags the example knows
/// (each takes a value). An unknown flag or a missing value ends the program with a message.
pub struct Settings {
    pairs: Vec<(String, String)>,
}

impl Settings {
    /// Reads `--flag VALUE` / `--flag=VALUE` pairs; `known` lists the flags allowed.
    pub fn from_args(example: &str, known: &[&str]) -> Settings {
        let mut pairs = Vec::new();
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            let (flag, value) = match arg.split_once('=') {
                Some((f, v)) => (f.to_owned(), Some(v.to_owned())),
                None => (arg.clone(), None),
            };
            if !known.contains(&flag.as_str()) {
                fail(
                    example,
                    &format!("unknown argument '{arg}' (known: {})", known.join(", ")),
                );
            }
            let value = match value.or_else(|| args.next()) {
                Some(v) => v,
                None => fail(example, &format!("{flag} needs a value")),
            };
            pairs.push((flag, value));
        }
        Settings { pairs }
    }

    /// The flag's value, else the environment variable's, else `default`.
    pub fn text(&self, flag: &str, env: &str, default: &str) -> String {
        self.pairs
            .iter()
            .rev()
            .find(|(f, _)| f == flag)
            .map(|(_, v)| v.clone())
            .or_else(|| std::env::var(env).ok().filter(|v| !v.is_empty()))
            .unwrap_or_else(|| default.to_owned())
    }

    /// The manager address: `--addr`, `$DEPOT_ADDR` or 127.0.0.1:5000.
    pub fn addr(&self) -> String {
        self.text("--addr", "DEPOT_ADDR", DEFAULT_ADDR)
    }

    /// The authkey: `--authkey`, `$DEPOT_AUTHKEY` or `producer`.
    pub fn authkey(&self) -> String {
        self.text("--authkey", "DEPOT_AUTHKEY", DEFAULT_AUTHKEY)
    }

    /// A whole number given with `flag`, if any.
    pub fn number(&self, example: &str, flag: &str) -> Option<u64> {
        let (_, v) = self.pairs.iter().rev().find(|(f, _)| f == flag)?;
        match v.parse() {
            Ok(n) => Some(n),
            Err(_) => fail(example, &format!("{flag} wants a whole number, not '{v}'")),
        }
    }
}

/// Prints `example: message` on stderr and exits with status 2.
pub fn fail(example: &str, message: &str) -> ! {
    eprintln!("{example}: {message}");
    std::process::exit(2)
}

/// xorshift64: small, fast, and plenty random for example data.
pub struct XorShift(u64);

impl XorShift {
    /// Seeded from the clock, the process id and `stream` (so threads differ).
    pub fn seeded(stream: u64) -> XorShift {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let seed = nanos
            ^ (u64::from(std::process::id()) << 32)
            ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        XorShift(seed.max(1))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A number in 1..=10, as the seed's producer puts.
    pub fn one_to_ten(&mut self) -> u32 {
        (self.next_u64() % 10) as u32 + 1
    }
}
