//! Child processes driven by lines: the harness reads their stdout line by line and writes
//! commands to their stdin (Python clients, the idle-connection holder, servers that print their port).

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use anyhow::{anyhow, bail, Context, Result};

/// A running child with piped stdin and stdout; stderr is inherited so its errors show.
/// Dropping it kills the child if it is still running.
pub struct LineChild {
    label: String,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl LineChild {
    /// Start `command`; `label` names it in errors.
    pub fn spawn(mut command: Command, label: impl Into<String>) -> Result<Self> {
        let label = label.into();
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {label}"))?;
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().context("child stdout")?);
        Ok(LineChild {
            label,
            child,
            stdin,
            stdout,
        })
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it has exited (without waiting).
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// The next line of its stdout, without the line end; an error if it exited instead.
    pub fn read_line(&mut self) -> Result<String> {
        let mut line = String::new();
        let n = self
            .stdout
            .read_line(&mut line)
            .with_context(|| format!("reading from {}", self.label))?;
        if n == 0 {
            let status = self.child.wait()?;
            bail!("{} exited ({status}) before answering", self.label);
        }
        Ok(line.trim_end().to_owned())
    }

    /// Read a line and require it to be `word`.
    pub fn expect(&mut self, word: &str) -> Result<()> {
        let line = self.read_line()?;
        if line != word {
            bail!("{} said {line:?}, expected {word:?}", self.label);
        }
        Ok(())
    }

    /// Read a line holding one JSON object.
    pub fn read_json(&mut self) -> Result<serde_json::Value> {
        let line = self.read_line()?;
        serde_json::from_str(&line)
            .with_context(|| format!("{} printed {line:?}, not JSON", self.label))
    }

    /// Write `line` and a line end to its stdin.
    pub fn send(&mut self, line: &str) -> Result<()> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| anyhow!("{} stdin closed", self.label))?;
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .with_context(|| format!("writing to {}", self.label))
    }

    /// Close its stdin, wait for it to exit and require success.
    pub fn finish(mut self) -> Result<()> {
        self.stdin.take();
        let status = self.child.wait()?;
        if !status.success() {
            bail!("{} exited with {status}", self.label);
        }
        Ok(())
    }
}

impl Drop for LineChild {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A JSON field as an unsigned integer, or an error naming it.
pub fn json_u64(value: &serde_json::Value, field: &str) -> Result<u64> {
    value[field]
        .as_u64()
        .ok_or_else(|| anyhow!("no integer {field:?} in {value}"))
}
