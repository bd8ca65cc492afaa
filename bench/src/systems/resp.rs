//! A minimal RESP2 client: commands as arrays of bulk strings, replies parsed recursively.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

/// Longest a read may wait before the connection counts as stuck.
const READ_TIMEOUT: Duration = Duration::from_secs(120);

/// A reply from the server (`-ERR …` replies become `Err` instead).
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`, `+PONG`.
    Simple(String),
    /// `:42`.
    Integer(i64),
    /// `$n …`, `None` for the null bulk string.
    Bulk(Option<Vec<u8>>),
    /// `*n …`, `None` for the null array.
    Array(Option<Vec<Reply>>),
}

/// One connection (one file descriptor: the idle-connection holder keeps 10,000 of them), one
/// request in flight unless the caller uses [`RespConn::send`] on its own.
pub struct RespConn {
    stream: BufReader<TcpStream>,
    out: Vec<u8>,
}

impl RespConn {
    /// Connect with TCP_NODELAY.
    pub fn connect(addr: &str) -> Result<Self> {
        let stream = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(READ_TIMEOUT))?;
        Ok(RespConn {
            stream: BufReader::new(stream),
            out: Vec::with_capacity(256),
        })
    }

    /// `AUTH password`.
    pub fn auth(&mut self, password: &str) -> Result<()> {
        match self.command(&[b"AUTH", password.as_bytes()])? {
            Reply::Simple(ok) if ok == "OK" => Ok(()),
            other => bail!("AUTH answered {other:?}"),
        }
    }

    /// Send one command and read its reply.
    pub fn command(&mut self, args: &[&[u8]]) -> Result<Reply> {
        self.send(args)?;
        self.read_reply()
    }

    /// Write one command without reading the reply.
    pub fn send(&mut self, args: &[&[u8]]) -> Result<()> {
        self.out.clear();
        write!(self.out, "*{}\r\n", args.len())?;
        for arg in args {
            write!(self.out, "${}\r\n", arg.len())?;
            self.out.extend_from_slice(arg);
            self.out.extend_from_slice(b"\r\n");
        }
        self.stream.get_mut().write_all(&self.out)?;
        Ok(())
    }

    /// Read one reply.
    pub fn read_reply(&mut self) -> Result<Reply> {
        let line = self.read_line()?;
        let (kind, rest) = line.split_at(1);
        match kind {
            "+" => Ok(Reply::Simple(rest.to_owned())),
            "-" => Err(anyhow!("redis: {rest}")),
            ":" => Ok(Reply::Integer(rest.parse()?)),
            "$" => match rest.parse::<i64>()? {
                n if n < 0 => Ok(Reply::Bulk(None)),
                n => {
                    let mut data = vec![0; n as usize + 2];
                    self.stream.read_exact(&mut data)?;
                    data.truncate(n as usize);
                    Ok(Reply::Bulk(Some(data)))
                }
            },
            "*" => match rest.parse::<i64>()? {
                n if n < 0 => Ok(Reply::Array(None)),
                n => (0..n)
                    .map(|_| self.read_reply())
                    .collect::<Result<_>>()
                    .map(|v| Reply::Array(Some(v))),
            },
            _ => bail!("unexpected RESP line {line:?}"),
        }
    }

    fn read_line(&mut self) -> Result<String> {
        let mut line = String::new();
        if self.stream.read_line(&mut line)? == 0 {
            bail!("redis closed the connection");
        }
        let line = line.trim_end_matches("\r\n");
        if line.is_empty() {
            bail!("empty RESP line");
        }
        Ok(line.to_owned())
    }
}
