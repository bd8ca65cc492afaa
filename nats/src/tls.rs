//! TLS to the NATS servers (cargo feature `tls`: rustls with the ring provider).
//!
//! NATS starts in plain text: the server's INFO says `tls_required`, and the client then does
//! the TLS handshake on the same socket. After it the reader thread and the writer thread share
//! one rustls connection under a mutex, held only to seal or open records: each does its socket
//! I/O outside the lock, and only the writer thread sends, so records leave in the order they
//! were sealed.

use std::io;
use std::net::TcpStream;
use std::path::Path;

/// What a client trusts and shows: the roots that signed the servers' certificates, and
/// optionally a certificate of its own (mutual TLS).
#[derive(Clone)]
pub struct TlsConfig {
    #[cfg(feature = "tls")]
    config: std::sync::Arc<rustls::ClientConfig>,
    #[cfg(not(feature = "tls"))]
    never: std::convert::Infallible,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsConfig")
    }
}

#[cfg(feature = "tls")]
impl TlsConfig {
    /// Trusts the PEM certificates in `ca` (and nothing else: a client without roots would
    /// trust no server), and shows the PEM certificate chain and key of `client`, if given.
    pub fn from_files(ca: &Path, client: Option<(&Path, &Path)>) -> Result<TlsConfig, String> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        let certs =
            CertificateDer::pem_file_iter(ca).map_err(|e| format!("{}: {e}", ca.display()))?;
        for cert in certs {
            let cert = cert.map_err(|e| format!("{}: {e}", ca.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("{}: {e}", ca.display()))?;
        }
        if roots.is_empty() {
            return Err(format!("{}: no PEM certificate in it", ca.display()));
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots);
        let config = match client {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let chain = CertificateDer::pem_file_iter(cert)
                    .and_then(Iterator::collect::<Result<Vec<_>, _>>)
                    .map_err(|e| format!("{}: {e}", cert.display()))?;
                if chain.is_empty() {
                    return Err(format!("{}: no PEM certificate in it", cert.display()));
                }
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| format!("{}: {e}", key.display()))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| format!("client certificate: {e}"))?
            }
        };
        Ok(TlsConfig {
            config: std::sync::Arc::new(config),
        })
    }
}

#[cfg(not(feature = "tls"))]
impl TlsConfig {
    /// TLS is not built in (cargo feature `tls`): always an error.
    pub fn from_files(_ca: &Path, _client: Option<(&Path, &Path)>) -> Result<TlsConfig, String> {
        Err("TLS to NATS is not built into this depot (cargo feature `tls` of depot-nats)".into())
    }
}

/// One connection's TLS state, shared by its reader and writer.
pub(crate) struct Session {
    #[cfg(feature = "tls")]
    conn: std::sync::Mutex<rustls::ClientConnection>,
    #[cfg(not(feature = "tls"))]
    never: std::convert::Infallible,
}

#[cfg(feature = "tls")]
impl Session {
    fn lock(&self) -> std::sync::MutexGuard<'_, rustls::ClientConnection> {
        self.conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The handshake with server `host` on `tcp`, in full, before anything else is sent.
    pub(crate) fn handshake(config: &TlsConfig, host: &str, tcp: &TcpStream) -> io::Result<Self> {
        let name = rustls::pki_types::ServerName::try_from(host.to_owned())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{host}: {e}")))?;
        let mut conn =
            rustls::ClientConnection::new(config.config.clone(), name).map_err(io::Error::other)?;
        // Whole batches are sealed at once: the writer thread bounds what it hands over.
        conn.set_buffer_limit(None);
        let mut io = tcp;
        while conn.is_handshaking() {
            conn.complete_io(&mut io)?;
        }
        while conn.wants_write() {
            conn.write_tls(&mut io)?;
        }
        Ok(Session {
            conn: std::sync::Mutex::new(conn),
        })
    }

    /// Seals `plain` (and whatever TLS itself has to say) into records appended to `out`.
    pub(crate) fn seal(&self, plain: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        let mut conn = self.lock();
        io::Write::write_all(&mut conn.writer(), plain)?;
        while conn.wants_write() {
            conn.write_tls(out)?;
        }
        Ok(())
    }

    /// Plaintext received so far, into `dst`: `None` when there is none until more records
    /// come, `Some(0)` when the server closed the session.
    pub(crate) fn open(&self, dst: &mut [u8]) -> io::Result<Option<usize>> {
        match io::Read::read(&mut self.lock().reader(), dst) {
            Ok(n) => Ok(Some(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Takes records from `raw`: how many bytes it took, and whether TLS has something to
    /// send in return (the writer thread's to send).
    pub(crate) fn feed(&self, raw: &[u8]) -> io::Result<(usize, bool)> {
        let mut conn = self.lock();
        let mut input = raw;
        let n = conn.read_tls(&mut input)?;
        conn.process_new_packets()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("TLS: {e}")))?;
        Ok((n, conn.wants_write()))
    }
}

#[cfg(not(feature = "tls"))]
impl Session {
    pub(crate) fn handshake(config: &TlsConfig, _host: &str, _tcp: &TcpStream) -> io::Result<Self> {
        match config.never {}
    }

    pub(crate) fn seal(&self, _plain: &[u8], _out: &mut Vec<u8>) -> io::Result<()> {
        match self.never {}
    }

    pub(crate) fn open(&self, _dst: &mut [u8]) -> io::Result<Option<usize>> {
        match self.never {}
    }

    pub(crate) fn feed(&self, _raw: &[u8]) -> io::Result<(usize, bool)> {
        match self.never {}
    }
}
