//! TLS for the service agent: rustls over the HTTP client's connection, writing several TLS
//! records to the connection at once.
//!
//! The HTTP client's own TLS layer hands rustls an adapter that takes one record per write, so
//! a request went to the socket as one `sendto` per 16 KiB record: seven for a PutRecords
//! request of 500 lines of 100 bytes, each waking the peer. Here rustls keeps up to its buffer
//! limit (64 KiB) of encrypted records while the request is written, and hands them over
//! together ([`Wire`]'s vectored write fills the connection's send buffer with as many as fit):
//! the pending records go out when that limit is reached, and the last of a request before its
//! answer is awaited. Reading, the handshake and the errors are rustls's and the client's, as
//! before; only the batching of writes differs.

use std::fmt;
use std::io::{self, IoSlice, Read, Write};
use std::sync::Arc;
use std::time::Instant;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};
use ureq::unversioned::transport::time::{Duration as UreqDuration, Instant as UreqInstant};
use ureq::unversioned::transport::{
    Buffers, ConnectionDetails, Connector, Either, LazyBuffers, NextTimeout, Transport,
    TransportAdapter,
};

/// Wraps the connection beneath in TLS for `https` URLs, with a client configuration made once.
pub struct TlsConnector {
    config: Arc<ClientConfig>,
    /// The TLS layer's own buffers: (receive, send), the plain text the client reads and writes.
    buffers: (usize, usize),
}

impl TlsConnector {
    /// A connector that uses `config` for every connection, with buffers of `receive` and
    /// `send` bytes for the plain text.
    pub fn new(config: Arc<ClientConfig>, receive: usize, send: usize) -> TlsConnector {
        TlsConnector {
            config,
            buffers: (receive, send),
        }
    }
}

impl fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConnector").finish_non_exhaustive()
    }
}

/// The name the server's certificate must carry: the URL's host, IPv6 brackets removed.
fn server_name(details: &ConnectionDetails) -> Result<ServerName<'static>, ureq::Error> {
    let host = details.uri.host().unwrap_or_default();
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    ServerName::try_from(bare.to_owned()).map_err(|_| ureq::Error::Tls("invalid DNS name"))
}

impl<In: Transport> Connector<In> for TlsConnector {
    type Out = Either<In, TlsTransport>;

    fn connect(
        &self,
        details: &ConnectionDetails,
        chained: Option<In>,
    ) -> Result<Option<Self::Out>, ureq::Error> {
        let Some(transport) = chained else {
            return Ok(None);
        };
        if !details.needs_tls() || transport.is_tls() {
            return Ok(Some(Either::A(transport)));
        }
        let mut conn = ClientConnection::new(Arc::clone(&self.config), server_name(details)?)?;
        let mut wire = Wire::new(transport.boxed(), details.current_time.clone());
        wire.set_timeout(details.timeout);
        conn.complete_io(&mut wire)?;
        let (receive, send) = self.buffers;
        Ok(Some(Either::B(TlsTransport {
            buffers: LazyBuffers::new(receive, send),
            conn,
            wire,
        })))
    }
}

/// A TLS connection as the HTTP client's transport.
pub struct TlsTransport {
    buffers: LazyBuffers,
    conn: ClientConnection,
    wire: Wire,
}

impl fmt::Debug for TlsTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsTransport").finish_non_exhaustive()
    }
}

impl TlsTransport {
    /// Writes every encrypted record rustls holds to the connection.
    fn flush(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            self.conn.write_tls(&mut self.wire)?;
        }
        Ok(())
    }
}

impl Transport for TlsTransport {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        self.wire.set_timeout(timeout);
        let mut done = 0;
        while done < amount {
            let rest = &self.buffers.output()[done..amount];
            let taken = self.conn.writer().write(rest)?;
            done += taken;
            if taken < rest.len() {
                // rustls holds as many encrypted bytes as its limit allows: one write sends
                // what fills the connection's buffer, and a record's tail stays to go with
                // the next ones.
                self.conn.write_tls(&mut self.wire)?;
            }
        }
        Ok(())
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        self.wire.set_timeout(timeout);
        // The rest of the request first: the answer comes after it.
        self.flush()?;
        let input = self.buffers.input_append_buf();
        let amount = rustls::Stream::new(&mut self.conn, &mut self.wire).read(input)?;
        self.buffers.input_appended(amount);
        Ok(amount > 0)
    }

    fn is_open(&mut self) -> bool {
        self.wire.adapter.get_mut().is_open()
    }

    fn is_tls(&self) -> bool {
        true
    }
}

/// The connection beneath the TLS layer, read through the client's adapter and written with
/// vectored writes that fill the connection's send buffer from several records.
struct Wire {
    adapter: TransportAdapter,
    /// The time left when the client last set it, and when that was.
    timeout: NextTimeout,
    set_at: Instant,
}

impl Wire {
    fn new(
        transport: Box<dyn Transport>,
        current_time: Arc<dyn Fn() -> UreqInstant + Send + Sync + 'static>,
    ) -> Wire {
        Wire {
            adapter: TransportAdapter::new(transport, current_time),
            timeout: NextTimeout::default(),
            set_at: Instant::now(),
        }
    }

    fn set_timeout(&mut self, timeout: NextTimeout) {
        self.adapter.set_timeout(timeout);
        self.timeout = timeout;
        self.set_at = Instant::now();
    }

    /// The time left now.
    fn timeout_now(&self) -> NextTimeout {
        let mut timeout = self.timeout;
        if let UreqDuration::Exact(left) = timeout.after {
            timeout.after = UreqDuration::Exact(left.saturating_sub(self.set_at.elapsed()));
        }
        timeout
    }
}

impl Read for Wire {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.adapter.read(buf)
    }
}

impl Write for Wire {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let timeout = self.timeout_now();
        let transport = self.adapter.get_mut();
        let output = transport.buffers().output();
        let mut filled = 0;
        for buf in bufs {
            let n = buf.len().min(output.len() - filled);
            output[filled..filled + n].copy_from_slice(&buf[..n]);
            filled += n;
            if filled == output.len() {
                break;
            }
        }
        if filled > 0 {
            transport
                .transmit_output(filled, timeout)
                .map_err(ureq::Error::into_io)?;
        }
        Ok(filled)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;
    use std::sync::Mutex;

    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use rustls::ServerConnection;

    /// A certificate for `localhost` made with openssl: (client config trusting it, server
    /// config presenting it).
    fn configs() -> (Arc<ClientConfig>, Arc<rustls::ServerConfig>) {
        let dir = std::env::temp_dir().join(format!("f2k-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        let out = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
            .args([
                "-subj",
                "/CN=test",
                "-addext",
                "subjectAltName=DNS:localhost",
            ])
            .args(["-addext", "basicConstraints=critical,CA:FALSE"])
            .args(["-addext", "extendedKeyUsage=serverAuth"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("openssl must be installed to make a test certificate");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let certs: Vec<_> = CertificateDer::pem_file_iter(&cert)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(&key).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add_parsable_certificates(certs.iter().cloned());
        let client = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        (Arc::new(client), Arc::new(server))
    }

    /// The connection beneath: hands every write to a TLS server in memory and records its
    /// size; reads are what the server has to send.
    struct Loop {
        buffers: LazyBuffers,
        server: ServerConnection,
        writes: Arc<Mutex<Vec<usize>>>,
        received: Arc<Mutex<Vec<u8>>>,
    }

    impl fmt::Debug for Loop {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("Loop")
        }
    }

    impl Transport for Loop {
        fn buffers(&mut self) -> &mut dyn Buffers {
            &mut self.buffers
        }

        fn transmit_output(&mut self, amount: usize, _: NextTimeout) -> Result<(), ureq::Error> {
            self.writes.lock().unwrap().push(amount);
            let mut bytes = &self.buffers.output()[..amount];
            while !bytes.is_empty() {
                self.server.read_tls(&mut bytes)?;
                self.server.process_new_packets()?;
                let mut plain = Vec::new();
                match self.server.reader().read_to_end(&mut plain) {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e.into()),
                }
                self.received.lock().unwrap().extend_from_slice(&plain);
            }
            Ok(())
        }

        fn await_input(&mut self, _: NextTimeout) -> Result<bool, ureq::Error> {
            let input = self.buffers.input_append_buf();
            let n = self.server.write_tls(&mut &mut input[..])?;
            self.buffers.input_appended(n);
            Ok(n > 0)
        }

        fn is_open(&mut self) -> bool {
            true
        }
    }

    #[test]
    fn a_request_goes_to_the_connection_several_records_at_a_time() {
        let (client, server) = configs();
        let writes = Arc::new(Mutex::new(Vec::new()));
        let received = Arc::new(Mutex::new(Vec::new()));
        let beneath = Loop {
            buffers: LazyBuffers::new(16 * 1024, 64 * 1024),
            server: ServerConnection::new(server).unwrap(),
            writes: Arc::clone(&writes),
            received: Arc::clone(&received),
        };
        let name = ServerName::try_from("localhost").unwrap();
        let mut conn = ClientConnection::new(client, name).unwrap();
        let mut wire = Wire::new(Box::new(beneath), Arc::new(UreqInstant::now));
        while conn.is_handshaking() {
            conn.complete_io(&mut wire).unwrap();
        }
        let mut tls = TlsTransport {
            buffers: LazyBuffers::new(16 * 1024, 32 * 1024),
            conn,
            wire,
        };
        writes.lock().unwrap().clear();

        // A request of 100,000 bytes written as the client writes it, 32 KiB at a time.
        let request: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        for piece in request.chunks(32 * 1024) {
            tls.buffers().output()[..piece.len()].copy_from_slice(piece);
            tls.transmit_output(piece.len(), NextTimeout::default())
                .unwrap();
        }
        tls.flush().unwrap();

        assert_eq!(
            *received.lock().unwrap(),
            request,
            "the server read the request"
        );
        // Seven records of at most 16 KiB; 64 KiB of them at a time make two writes.
        let writes = writes.lock().unwrap();
        let total: usize = writes.iter().sum();
        assert!(total > 100_000 + 7 * 22, "{total} bytes for seven records");
        assert_eq!(writes.len(), 2, "writes to the connection: {writes:?}");
    }
}
