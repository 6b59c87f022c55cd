//! HTTP clients for AWS: one place that sets TLS trust, proxies and timeouts.
//!
//! TLS trust is Mozilla's web PKI roots, compiled in (so a `FROM scratch` container works), plus
//! the PEM bundle named by `--ca-bundle` or `AWS_CA_BUNDLE`. `HTTPS_PROXY`, `HTTP_PROXY`,
//! `ALL_PROXY` and `NO_PROXY` are honoured for AWS endpoints; the metadata services of EC2 and
//! containers are link-local and always reached directly. Every agent answers 4xx/5xx as
//! responses, so error bodies can be read, and follows no redirect: a 3xx comes back as the
//! answer (an error to the caller), so a signed request is never re-sent elsewhere unsigned and
//! another URL's answer is never read as its own.
//!
//! A failed request becomes an error naming the service and the URL as it may be logged
//! ([`loggable_url`]: no user-info, query or fragment), and tells a service that was never
//! reached from one that answered or failed midway ([`request_error`]).

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ureq::config::Config;
use ureq::http::Uri;
use ureq::tls::{Certificate, PemItem};
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::NextTimeout;
use ureq::unversioned::transport::{ConnectProxyConnector, Connector, TcpConnector};
use ureq::Agent;

use super::tls::TlsConnector;
use super::Error;

/// How long a service endpoint's resolved addresses are used before they are looked up again.
const RESOLVE_TTL: Duration = Duration::from_secs(10);

/// The service agent's receive buffer. ureq's default, 128 KiB, is filled with zeros when a
/// connection is made, as is each of the other three buffers below (over TLS, ureq keeps a
/// receive and a send buffer both for the TLS layer and for the TCP connection beneath it):
/// 512 KiB of RSS. An answer longer than this (500 accepted records make about 50 KB) is read
/// in more pieces; rustls reads 4 KiB at a time anyway.
pub const RECEIVE_BUFFER_BYTES: usize = 16 * 1024;

/// The service agent's send buffer for the plain text: a request body is written this many
/// bytes at a time (to the connection over plain HTTP, to rustls over TLS).
pub const SEND_BUFFER_BYTES: usize = 32 * 1024;

/// The connection's own send buffer beneath TLS: the encrypted records rustls holds (up to
/// 64 KiB) go to the socket this many bytes at a time, so a request of 100 KB takes two
/// `sendto` where it took one for each 16 KiB record (see `tls`).
pub const WIRE_SEND_BUFFER_BYTES: usize = 64 * 1024;

/// The longest response head (status line and headers) a service agent reads: AWS's are under
/// a kilobyte. A longer one is a failed request (ureq: "response header is too big"),
/// retried; it must be shorter than [`RECEIVE_BUFFER_BYTES`], which holds the whole head (with
/// a longer limit, a longer head would fail as "made no progress" instead). A 200 whose head is
/// longer may have delivered its records: they are sent again, as for any answer that cannot be
/// read, so a proxy that always adds kilobytes of headers would repeat every batch.
pub const MAX_RESPONSE_HEAD_BYTES: usize = 8 * 1024;

const _: () = assert!(MAX_RESPONSE_HEAD_BYTES < RECEIVE_BUFFER_BYTES);

/// Settings shared by every agent.
#[derive(Clone, Debug, Default)]
pub struct HttpSettings {
    /// Extra trusted roots from a PEM bundle; `None`: the built-in roots only.
    extra_roots: Option<Arc<Vec<Certificate<'static>>>>,
}

impl HttpSettings {
    /// Settings that add the certificates in the PEM file at `bundle` to the built-in roots.
    pub fn with_ca_bundle(bundle: Option<&Path>) -> Result<HttpSettings, Error> {
        let Some(path) = bundle else {
            return Ok(HttpSettings::default());
        };
        let pem = std::fs::read(path).map_err(|source| Error::File {
            what: "--ca-bundle",
            path: path.to_path_buf(),
            source,
        })?;
        let unusable = |problem: String| Error::CaBundle {
            path: path.to_path_buf(),
            problem,
        };
        let mut certs = Vec::new();
        for item in ureq::tls::parse_pem(&pem) {
            match item {
                Ok(PemItem::Certificate(c)) => certs.push(c),
                Ok(_) => {}
                Err(e) => return Err(unusable(e.to_string())),
            }
        }
        if certs.is_empty() {
            return Err(unusable("no PEM certificate in it".into()));
        }
        Ok(HttpSettings {
            extra_roots: Some(Arc::new(certs)),
        })
    }

    /// How many extra roots the bundle added.
    pub fn extra_root_count(&self) -> usize {
        self.extra_roots.as_ref().map_or(0, |c| c.len())
    }

    /// An agent for AWS service endpoints (proxies from the environment honoured).
    /// Its addresses are looked up at most every 10 s (see `CachingResolver`).
    pub fn service_agent(&self, connect: Duration, request: Duration) -> Agent {
        let config = Agent::config_builder()
            .http_status_as_error(false)
            // With 0, ureq returns the 3xx itself, neither followed nor a TooManyRedirects
            // error that would hide its status.
            .max_redirects(0)
            .timeout_connect(Some(connect))
            .timeout_global(Some(request))
            .user_agent(USER_AGENT)
            .input_buffer_size(RECEIVE_BUFFER_BYTES)
            .output_buffer_size(WIRE_SEND_BUFFER_BYTES)
            .max_response_header_size(MAX_RESPONSE_HEAD_BYTES)
            .build();
        Agent::with_parts(
            config,
            self.connector(RECEIVE_BUFFER_BYTES, SEND_BUFFER_BYTES),
            CachingResolver::default(),
        )
    }

    /// The client's default chain with our TLS layer in place of its own: a proxy (CONNECT)
    /// or a direct TCP connection, then TLS for https, with plain-text buffers of `receive`
    /// and `send` bytes.
    fn connector(
        &self,
        receive: usize,
        send: usize,
    ) -> impl Connector<Out = impl ureq::unversioned::transport::Transport> {
        ().chain(ConnectProxyConnector::default())
            .chain(TcpConnector::default())
            .chain(TlsConnector::new(self.rustls_config(), receive, send))
    }

    /// The service agent's TLS: TLS 1.2 and 1.3 with ring, Mozilla's roots and the bundle's,
    /// SNI, no client certificate (the client's own TLS layer, made the same way).
    fn rustls_config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add_parsable_certificates(webpki_root_certs::TLS_SERVER_ROOT_CERTS.iter().cloned());
        let extra = self.extra_roots.iter().flat_map(|e| e.iter());
        roots.add_parsable_certificates(
            extra.map(|c| rustls::pki_types::CertificateDer::from(c.der()).into_owned()),
        );
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(rustls::ALL_VERSIONS)
            .expect("ring supports TLS 1.2 and 1.3")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }

    /// An agent for the link-local metadata services: no proxy, short timeouts. A connection
    /// not made within `connect` fails as [`ureq::Timeout::Connect`] when `connect` is shorter
    /// than `total` (see `never_connected`).
    pub fn metadata_agent(&self, connect: Duration, total: Duration) -> Agent {
        let config = Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(connect))
            .timeout_global(Some(total))
            .proxy(None)
            .user_agent(USER_AGENT)
            .max_redirects(0)
            .build();
        let (receive, send) = (config.input_buffer_size(), config.output_buffer_size());
        Agent::with_parts(
            config,
            self.connector(receive, send),
            DefaultResolver::default(),
        )
    }
}

/// Whether a request failed before any connection was made: nothing listens at the address,
/// no route leads there, the name does not resolve, or the connection timed out. Any other
/// failure means something answered at the address.
pub fn never_connected(e: &ureq::Error) -> bool {
    use std::io::ErrorKind;
    match e {
        ureq::Error::Timeout(t) => matches!(t, ureq::Timeout::Connect | ureq::Timeout::Resolve),
        ureq::Error::HostNotFound | ureq::Error::ConnectionFailed => true,
        ureq::Error::Io(e) => matches!(
            e.kind(),
            ErrorKind::ConnectionRefused
                | ErrorKind::HostUnreachable
                | ErrorKind::NetworkUnreachable
                | ErrorKind::NetworkDown
                | ErrorKind::AddrNotAvailable
        ),
        _ => false,
    }
}

/// The error for a request to `service` at `url` (as it may be logged) that failed with `e`:
/// [`Error::Unreachable`] if no connection was made, else [`Error::Http`]. Errors that quote
/// the URL whole (secrets and all) quote `url` instead.
pub fn request_error(service: &'static str, url: &str, e: ureq::Error) -> Error {
    let source = match e {
        ureq::Error::BadUri(_) => ureq::Error::BadUri(url.to_string()),
        ureq::Error::RequireHttpsOnly(_) => ureq::Error::RequireHttpsOnly(url.to_string()),
        e => e,
    };
    let url = url.to_string();
    if never_connected(&source) {
        Error::Unreachable {
            service,
            url,
            source,
        }
    } else {
        Error::Http {
            service,
            url,
            source,
        }
    }
}

/// `url` as it may be logged or put in an error: scheme, host, port and path. User-info, query
/// and fragment may hold secrets (a password, a signed token) and are left out; a URL that does
/// not parse is not shown at all, as there is no telling which part of it is secret.
pub fn loggable_url(url: &str) -> String {
    const UNPARSEABLE: &str = "(a URL that cannot be parsed)";
    let Ok(uri) = url.parse::<ureq::http::Uri>() else {
        return UNPARSEABLE.into();
    };
    match (uri.scheme_str(), uri.host()) {
        (Some(scheme), Some(host)) => {
            let port = uri.port_u16().map(|p| format!(":{p}")).unwrap_or_default();
            format!("{scheme}://{host}{port}{}", uri.path())
        }
        _ => UNPARSEABLE.into(),
    }
}

/// The `User-Agent` of every request.
pub const USER_AGENT: &str = concat!("fifo2kinesis/", env!("CARGO_PKG_VERSION"));

/// A resolver that keeps the last lookup for 10 seconds.
///
/// The HTTP client looks the host up before every request, even when it then reuses a pooled
/// connection, and with a timeout set it does so on a new thread each time: a thread per
/// request at thousands of requests a second. Reusing the addresses for a few seconds removes
/// that; a new connection made after the endpoint's addresses change uses them within
/// 10 seconds. Failed lookups are not kept.
#[derive(Debug, Default)]
pub struct CachingResolver {
    inner: DefaultResolver,
    last: Mutex<Option<Resolved>>,
}

#[derive(Debug)]
struct Resolved {
    uri: Uri,
    at: Instant,
    addrs: ResolvedSocketAddrs,
}

impl Resolver for CachingResolver {
    fn resolve(
        &self,
        uri: &Uri,
        config: &Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let same_host = |a: &Uri| a.scheme() == uri.scheme() && a.authority() == uri.authority();
        if let Some(r) = self.last.lock().expect("resolver lock").as_ref() {
            if same_host(&r.uri) && r.at.elapsed() < RESOLVE_TTL {
                return Ok(r.addrs.clone());
            }
        }
        let addrs = self.inner.resolve(uri, config, timeout)?;
        *self.last.lock().expect("resolver lock") = Some(Resolved {
            uri: uri.clone(),
            at: Instant::now(),
            addrs: addrs.clone(),
        });
        Ok(addrs)
    }
}
