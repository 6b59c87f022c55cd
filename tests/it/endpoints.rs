//! Reaching Kinesis: TLS trust with a CA bundle, proxies from the environment, and the region
//! from instance metadata. Everything stays on 127.0.0.1.

use std::sync::Arc;
use std::time::Duration;

use crate::support::http::TestCert;
use crate::support::proxy::{ConnectProxy, Tinyproxy};
use crate::support::*;
use nix::sys::signal::Signal;

const LONG: Duration = Duration::from_secs(60);

/// Runs the daemon with `env` and `extra`, writes one line, waits for `until` in the log (after
/// asking for stats), stops it, and returns the exit code and log.
fn one_line(
    name: &str,
    env: &[(String, String)],
    extra: &[&str],
    until: &str,
) -> (Option<i32>, String) {
    let dir = TempDir::new(name);
    let fifo = dir.join("in.pipe");
    let mut args = kinesis_args(
        fifo.to_str().unwrap(),
        &["--flush-interval", "50ms", "--shutdown-timeout", "300ms"],
    );
    args.extend_from_slice(extra);
    let mut daemon = Daemon::start(&dir, &args, env);
    wait_until(LONG, "the FIFO", || fifo.exists());
    write_lines_atomically(&mut open_writer(&fifo, LONG), &[name.as_bytes().to_vec()]);
    wait_until(LONG, until, || {
        daemon.signal(Signal::SIGUSR1);
        std::thread::sleep(Duration::from_millis(20));
        daemon.stderr().contains(until)
    });
    daemon.signal(Signal::SIGTERM);
    let code = daemon.wait_exit(LONG).code();
    (code, daemon.stderr())
}

#[test]
fn a_tls_endpoint_is_trusted_through_the_ca_bundle() {
    let dir = TempDir::new("tls-cert");
    let cert = TestCert::generate(dir.path());
    let server = FakeKinesis::start_tls("test-stream", &cert);
    assert!(server.url.starts_with("https://127.0.0.1:"));
    let env = aws_env(&server.url);

    // The built-in roots do not know the test certificate.
    let (code, log) = one_line("untrusted", &env, &[], "UnknownIssuer");
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("UnknownIssuer"), "{log}");
    assert_eq!(server.received_count(), 0);

    let bundle = cert.cert_path.to_str().unwrap();
    let (code, log) = one_line("option", &env, &["--ca-bundle", bundle], "records_sent=1 ");
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("trusting 1 extra CA certificates"), "{log}");

    let mut with_var = env.clone();
    with_var.push(("AWS_CA_BUNDLE".into(), bundle.into()));
    let (code, log) = one_line("variable", &with_var, &[], "records_sent=1 ");
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(
        server.received(),
        vec![b"option".to_vec(), b"variable".to_vec()]
    );
    assert_eq!(server.problems(), Vec::<String>::new());
}

#[test]
fn a_ca_bundle_without_certificates_is_a_setup_error() {
    let dir = TempDir::new("bad-bundle");
    let bundle = dir.join("empty.pem");
    std::fs::write(&bundle, "not a certificate\n").unwrap();
    let (status, _, stderr) = run_to_end(
        &[
            "-f",
            dir.join("p").to_str().unwrap(),
            "-s",
            "x",
            "-R",
            "us-east-1",
            "--ca-bundle",
            bundle.to_str().unwrap(),
        ],
        &[("AWS_ACCESS_KEY_ID", "A"), ("AWS_SECRET_ACCESS_KEY", "S")],
    );
    assert_eq!(status.code(), Some(2));
    assert!(
        stderr.contains("--ca-bundle") && stderr.contains("no PEM certificate"),
        "{stderr}"
    );
}

#[test]
fn proxies_from_the_environment_are_used_unless_no_proxy_says_otherwise() {
    let server = FakeKinesis::start("test-stream");
    let proxy = ConnectProxy::start(server.url.trim_start_matches("http://"));
    // The endpoint's name is never resolved: the proxy is asked for it, and tunnels to the
    // fake server on loopback.
    let mut env = aws_env("http://kinesis.example.invalid");
    env.push(("HTTPS_PROXY".into(), proxy.url.clone()));
    env.push(("HTTP_PROXY".into(), proxy.url.clone()));
    let (code, log) = one_line("proxied", &env, &[], "records_sent=1 ");
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(
        proxy.targets.lock().unwrap().first().map(String::as_str),
        Some("kinesis.example.invalid:80")
    );

    // NO_PROXY: straight to the server, the proxy (now a dead port) untouched.
    let mut env = aws_env(&server.url);
    env.push(("HTTP_PROXY".into(), "http://127.0.0.1:9".into()));
    env.push(("NO_PROXY".into(), "127.0.0.1".into()));
    let (code, log) = one_line("direct", &env, &[], "records_sent=1 ");
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(
        server.received(),
        vec![b"proxied".to_vec(), b"direct".to_vec()]
    );
    assert_eq!(server.problems(), Vec::<String>::new());
}

#[test]
fn a_real_proxy_tunnels_to_a_tls_endpoint() {
    let dir = TempDir::new("tinyproxy-tls");
    let cert = TestCert::generate(dir.path());
    let server = FakeKinesis::start_tls("test-stream", &cert);
    let target = server.url.trim_start_matches("https://").to_string();
    let port: u16 = target.rsplit(':').next().unwrap().parse().unwrap();
    let proxy = Tinyproxy::start(&dir, &[port]);
    let mut env = aws_env(&server.url);
    env.push(("HTTPS_PROXY".into(), proxy.url.clone()));
    let bundle = cert.cert_path.to_str().unwrap();
    let (code, log) = one_line(
        "tinyproxy",
        &env,
        &["--ca-bundle", bundle],
        "records_sent=1 ",
    );
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(server.received(), vec![b"tinyproxy".to_vec()]);
    assert_eq!(server.problems(), Vec::<String>::new());
    proxy.assert_tunnelled_to(&target);
}

#[test]
fn the_region_can_come_from_instance_metadata() {
    let server = FakeKinesis::start("test-stream");
    let imds = FakeImds::start(Arc::clone(&server.registry), Duration::from_secs(3600));
    let env: Vec<(String, String)> = vec![
        ("AWS_ENDPOINT_URL_KINESIS".into(), server.url.clone()),
        ("AWS_EC2_METADATA_DISABLED".into(), "false".into()),
        (
            "AWS_EC2_METADATA_SERVICE_ENDPOINT".into(),
            imds.server.url.clone(),
        ),
    ];
    let (code, log) = one_line("imds-region", &env, &[], "records_sent=1 ");
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("in us-east-1 at"), "{log}");
    assert!(log.contains("credentials: EC2 instance metadata"), "{log}");
    assert_eq!(server.problems(), Vec::<String>::new());
}

/// The endpoint URL was logged whole at start and in delivery warnings: a query or user-info
/// in it (a gateway's key) reached the log.
#[test]
fn an_endpoint_url_is_logged_without_its_query() {
    let server = FakeKinesis::start("test-stream");
    let dir = TempDir::new("endpoint-query");
    let fifo = dir.join("in.pipe");
    let secret = "gateway-key-8f2c1e";
    let endpoint = format!("{}/?key={secret}", server.url);
    let args = kinesis_args(fifo.to_str().unwrap(), &["--endpoint-url", &endpoint]);
    let daemon = Daemon::start(&dir, &args, &aws_env(&server.url));
    wait_until(LONG, "the start-up log line", || {
        daemon.stderr().contains("publishing to stream")
    });
    let log = stop_cleanly(daemon);
    assert!(!log.contains(secret), "{log}");
    assert!(log.contains(&format!("at {}/", server.url)), "{log}");
}
