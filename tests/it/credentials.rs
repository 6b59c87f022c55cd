//! The credential chain end to end: each source lands PutRecords at the fake Kinesis server,
//! temporary credentials are refreshed while lines keep flowing, and no secret reaches the
//! log even with `--debug`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::support::*;
use nix::sys::signal::Signal;

const LONG: Duration = Duration::from_secs(60);

/// Secrets no log line may contain.
fn assert_no_secrets(log: &str, extra: &[String]) {
    let fixed = [TEST_SECRET, TEMP_SECRET, TEMP_TOKEN, WEB_IDENTITY_TOKEN];
    for s in fixed
        .iter()
        .map(|s| s.to_string())
        .chain(extra.iter().cloned())
    {
        assert!(
            !log.contains(&s),
            "a secret ({} chars) leaked into the log",
            s.len()
        );
    }
    assert!(
        !log.to_ascii_lowercase().contains("signature="),
        "a signature leaked into the log"
    );
}

/// Environment for the fake Kinesis with no static keys: the chain must find credentials.
fn base_env(server: &FakeKinesis, home: &TempDir) -> Vec<(String, String)> {
    vec![
        ("AWS_REGION".into(), "us-east-1".into()),
        ("AWS_ENDPOINT_URL_KINESIS".into(), server.url.clone()),
        ("AWS_ENDPOINT_URL_STS".into(), server.url.clone()),
        ("HOME".into(), home.path().to_str().unwrap().into()),
    ]
}

/// [`base_env`] with the fake instance metadata service turned on.
fn imds_env(server: &FakeKinesis, home: &TempDir, imds: &FakeImds) -> Vec<(String, String)> {
    let mut env = base_env(server, home);
    env.push(("AWS_EC2_METADATA_DISABLED".into(), "false".into()));
    env.push((
        "AWS_EC2_METADATA_SERVICE_ENDPOINT".into(),
        imds.server.url.clone(),
    ));
    env
}

/// Runs the daemon with `env`, writes `n` lines, stops it, and returns its log.
fn deliver(name: &str, server: &FakeKinesis, env: Vec<(String, String)>, n: usize) -> String {
    let dir = TempDir::new(name);
    let fifo = dir.join("in.pipe");
    let mut daemon =
        start_daemon_with_env(&dir, &fifo, &["--flush-interval", "100ms", "--debug"], &env);
    let lines: Vec<Vec<u8>> = (0..n)
        .map(|i| format!("{name} line {i}").into_bytes())
        .collect();
    write_lines_atomically(&mut open_writer(&fifo, LONG), &lines);
    wait_until(LONG, "every line at the server", || {
        server.received_count() >= n
    });
    daemon.signal(Signal::SIGTERM);
    let status = daemon.wait_exit(LONG);
    let log = daemon.stderr();
    assert!(status.success(), "{log}");
    assert_eq!(server.received(), lines);
    assert_eq!(server.problems(), Vec::<String>::new());
    log
}

#[test]
fn shared_credentials_file_static_keys() {
    let home = TempDir::new("home-static");
    fs::create_dir_all(home.join(".aws")).unwrap();
    fs::write(
        home.join(".aws/credentials"),
        format!(
            "[default]\naws_access_key_id = {TEST_KEY_ID}\naws_secret_access_key = {TEST_SECRET}\n"
        ),
    )
    .unwrap();
    let server = FakeKinesis::start("test-stream");
    let log = deliver("static", &server, base_env(&server, &home), 20);
    assert!(log.contains("credentials: profile \"default\""), "{log}");
    assert_no_secrets(&log, &[]);
}

#[test]
fn profile_role_over_a_source_profile_assumes_the_role() {
    let home = TempDir::new("home-role");
    fs::create_dir_all(home.join(".aws")).unwrap();
    fs::write(
        home.join(".aws/config"),
        "[profile ci]\nrole_arn = arn:aws:iam::123456789012:role/ci\nsource_profile = base\nexternal_id = ext-1\nrole_session_name = ci-session\n",
    )
    .unwrap();
    fs::write(
        home.join(".aws/credentials"),
        format!(
            "[base]\naws_access_key_id = {TEST_KEY_ID}\naws_secret_access_key = {TEST_SECRET}\n"
        ),
    )
    .unwrap();
    let server = FakeKinesis::start("test-stream");
    let mut env = base_env(&server, &home);
    env.push(("AWS_PROFILE".into(), "ci".into()));
    let log = deliver("role", &server, env, 20);
    let calls = server.sts_calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert!(
        calls[0].ends_with("role%2Fci&RoleSessionName=ci-session&ExternalId=ext-1"),
        "{}",
        calls[0]
    );
    assert!(server
        .requests()
        .iter()
        .all(|r| r.headers["authorization"].contains(TEMP_KEY_ID)));
    assert_no_secrets(&log, &[]);
}

/// Writes `script` (a shell script) to `home/creds.sh` and a default profile in
/// `home/.aws/config` that runs it as its `credential_process`.
fn credential_process_profile(home: &TempDir, script: &str) {
    fs::create_dir_all(home.join(".aws")).unwrap();
    let path = home.join("creds.sh");
    fs::write(&path, format!("#!/bin/sh\n{script}")).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o700)).unwrap();
    fs::write(
        home.join(".aws/config"),
        format!("[default]\ncredential_process = {}\n", path.display()),
    )
    .unwrap();
}

/// A `credential_process` script that fails like an expired SSO session until `ok` exists,
/// then prints the test keys.
fn failing_until(ok: &std::path::Path) -> String {
    format!(
        "[ -e '{}' ] || {{ echo 'sso session expired; run login' >&2; exit 1; }}\n\
         printf '{{\"Version\":1,\"AccessKeyId\":\"{TEST_KEY_ID}\",\"SecretAccessKey\":\"{TEST_SECRET}\"}}'\n",
        ok.display()
    )
}

#[test]
fn credential_process_in_a_profile() {
    let home = TempDir::new("home-process");
    credential_process_profile(
        &home,
        &format!("printf '{{\"Version\":1,\"AccessKeyId\":\"{TEST_KEY_ID}\",\"SecretAccessKey\":\"{TEST_SECRET}\"}}'\n"),
    );
    let server = FakeKinesis::start("test-stream");
    let log = deliver("process", &server, base_env(&server, &home), 20);
    assert_no_secrets(&log, &[]);
}

#[test]
fn a_failing_credential_process_is_reported_and_the_lines_wait() {
    let home = TempDir::new("home-process-fail");
    let ok = home.join("ok");
    credential_process_profile(&home, &failing_until(&ok));
    let server = FakeKinesis::start("test-stream");
    let dir = TempDir::new("process-fail");
    let fifo = dir.join("in.pipe");
    let mut daemon = start_daemon_with_env(
        &dir,
        &fifo,
        &["--flush-interval", "100ms"],
        &base_env(&server, &home),
    );
    write_lines_atomically(&mut open_writer(&fifo, LONG), &[b"waiting line".to_vec()]);
    daemon.wait_log(
        "credential_process exited 1: sso session expired; run login",
        LONG,
    );
    assert_eq!(server.received_count(), 0);
    fs::write(&ok, "").unwrap();
    wait_until(LONG, "the line after credentials came back", || {
        server.received_count() == 1
    });
    daemon.signal(Signal::SIGTERM);
    assert!(daemon.wait_exit(LONG).success());
    assert_no_secrets(&daemon.stderr(), &[]);
}

#[test]
fn web_identity_from_the_environment() {
    let home = TempDir::new("home-web");
    let token = home.join("token");
    fs::write(&token, WEB_IDENTITY_TOKEN).unwrap();
    let server = FakeKinesis::start("test-stream");
    let mut env = base_env(&server, &home);
    env.push((
        "AWS_WEB_IDENTITY_TOKEN_FILE".into(),
        token.to_str().unwrap().into(),
    ));
    env.push((
        "AWS_ROLE_ARN".into(),
        "arn:aws:iam::123456789012:role/pod".into(),
    ));
    env.push(("AWS_ROLE_SESSION_NAME".into(), "pod-session".into()));
    let log = deliver("web", &server, env, 20);
    let calls = server.sts_calls();
    assert_eq!(calls.len(), 1);
    assert!(calls[0].contains(
        "RoleArn=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Fpod&RoleSessionName=pod-session"
    ));
    assert_no_secrets(&log, &[]);
}

#[test]
fn role_arn_option_over_the_chain_with_external_id() {
    let home = TempDir::new("home-roleopt");
    let server = FakeKinesis::start("test-stream");
    let dir = TempDir::new("roleopt");
    let fifo = dir.join("in.pipe");
    let mut env = base_env(&server, &home);
    env.push(("AWS_ACCESS_KEY_ID".into(), TEST_KEY_ID.into()));
    env.push(("AWS_SECRET_ACCESS_KEY".into(), TEST_SECRET.into()));
    let args = kinesis_args(
        fifo.to_str().unwrap(),
        &[
            "--role-arn",
            "arn:aws:iam::123456789012:role/writer",
            "--role-external-id",
            "xyz-42",
            "--flush-interval",
            "100ms",
            "--debug",
        ],
    );
    let mut daemon = Daemon::start(&dir, &args, &env);
    wait_until(LONG, "the FIFO", || fifo.exists());
    write_lines_atomically(&mut open_writer(&fifo, LONG), &[b"x".to_vec()]);
    wait_until(LONG, "the line", || server.received_count() == 1);
    daemon.signal(Signal::SIGTERM);
    assert!(daemon.wait_exit(LONG).success());
    let calls = server.sts_calls();
    assert!(
        calls[0].contains("RoleSessionName=fifo2kinesis-")
            && calls[0].ends_with("&ExternalId=xyz-42"),
        "{}",
        calls[0]
    );
    assert_no_secrets(&daemon.stderr(), &[]);
}

#[test]
fn nothing_found_exits_two_listing_what_was_tried() {
    let (status, _, stderr) = run_to_end(
        &[
            "-f",
            "/tmp/never-created.pipe",
            "-s",
            "x",
            "-R",
            "us-east-1",
        ],
        &[],
    );
    assert_eq!(status.code(), Some(2));
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    for needle in [
        "no AWS credentials found",
        "environment",
        "profile \"default\"",
        "web identity",
        "container",
        "EC2 instance metadata",
    ] {
        assert!(stderr.contains(needle), "{needle}: {stderr}");
    }
}

fn soak_seconds() -> u64 {
    std::env::var("FIFO2KINESIS_SOAK_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300)
}

/// Writes numbered lines steadily for `seconds` (reopening the FIFO now and then) and checks
/// that every line arrived while the credentials behind them expired every 60 s.
fn soak(name: &str, server: &FakeKinesis, env: Vec<(String, String)>, fetches: &dyn Fn() -> usize) {
    let seconds = soak_seconds();
    let dir = TempDir::new(name);
    let fifo = dir.join("in.pipe");
    let mut daemon =
        start_daemon_with_env(&dir, &fifo, &["--flush-interval", "200ms", "--debug"], &env);
    let end = Instant::now() + Duration::from_secs(seconds);
    let mut written = 0usize;
    while Instant::now() < end {
        let mut w = open_writer(&fifo, LONG);
        for _ in 0..100 {
            let lines: Vec<Vec<u8>> = (written..written + 20)
                .map(|i| format!("{name} {i:09}").into_bytes())
                .collect();
            write_lines_atomically(&mut w, &lines);
            written += 20;
            thread::sleep(Duration::from_millis(20));
        }
    }
    wait_until(LONG, "every line at the server", || {
        server.received_count() >= written
    });
    daemon.signal(Signal::SIGTERM);
    assert!(daemon.wait_exit(LONG).success(), "{}", daemon.stderr());
    let want: Vec<Vec<u8>> = (0..written)
        .map(|i| format!("{name} {i:09}").into_bytes())
        .collect();
    assert_eq!(server.received(), want, "every line, once, in order");
    assert_eq!(server.problems(), Vec::<String>::new());
    let fetched = fetches();
    let rejected = server.registry.expired_rejections.load(Ordering::SeqCst);
    println!("{name}: {written} lines over {seconds} s; credentials fetched {fetched} times; {rejected} requests rejected as expired");
    assert!(
        fetched as u64 >= seconds / 60,
        "credentials were not refreshed ({fetched} fetches)"
    );
    assert!(
        rejected <= fetched,
        "more expiry rejections ({rejected}) than refreshes ({fetched})"
    );
    assert_no_secrets(&daemon.stderr(), &server.registry.secrets());
}

#[test]
fn imds_credentials_expiring_every_minute_are_refreshed_while_lines_flow() {
    let server = FakeKinesis::with_behaviour("test-stream", false, |_, _| Reply::Accept);
    let imds = FakeImds::start(Arc::clone(&server.registry), Duration::from_secs(60));
    let home = TempDir::new("home-imds");
    let env = imds_env(&server, &home, &imds);
    let fetches = Arc::clone(&imds.credential_fetches);
    soak("imds", &server, env, &|| fetches.load(Ordering::SeqCst));
}

#[test]
fn container_credentials_expiring_every_minute_are_refreshed_while_lines_flow() {
    let server = FakeKinesis::with_behaviour("test-stream", false, |_, _| Reply::Accept);
    let container = FakeContainer::start(
        Arc::clone(&server.registry),
        Duration::from_secs(60),
        "Bearer pod-token",
    );
    let home = TempDir::new("home-container");
    let token_file = home.join("auth-token");
    fs::write(&token_file, "Bearer pod-token\n").unwrap();
    let mut env = base_env(&server, &home);
    env.push((
        "AWS_CONTAINER_CREDENTIALS_FULL_URI".into(),
        format!("{}/creds", container.server.url),
    ));
    env.push((
        "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE".into(),
        token_file.to_str().unwrap().into(),
    ));
    let fetches = Arc::clone(&container.credential_fetches);
    soak("container", &server, env, &|| {
        fetches.load(Ordering::SeqCst)
    });
}

/// A container credentials URL with a password in its user-info and a token in its query was
/// logged whole at start-up ("credentials: container credentials at ...").
#[test]
fn container_url_user_info_and_query_are_kept_out_of_the_log() {
    const SECRET: &str = "made-up-url-secret-4711";
    let server = FakeKinesis::with_behaviour("test-stream", false, |_, _| Reply::Accept);
    let container = FakeContainer::start(
        Arc::clone(&server.registry),
        Duration::from_secs(3600),
        "Bearer pod-token",
    );
    let home = TempDir::new("home-container-url");
    let port = container.server.url.rsplit(':').next().unwrap();
    let mut env = base_env(&server, &home);
    env.push((
        "AWS_CONTAINER_CREDENTIALS_FULL_URI".into(),
        format!("http://user:{SECRET}@127.0.0.1:{port}/creds?token={SECRET}#{SECRET}"),
    ));
    env.push((
        "AWS_CONTAINER_AUTHORIZATION_TOKEN".into(),
        "Bearer pod-token".into(),
    ));
    let dir = TempDir::new("container-url");
    let fifo = dir.join("in.pipe");
    let mut daemon = start_daemon_with_env(&dir, &fifo, &["--flush-interval", "100ms"], &env);
    write_lines_atomically(&mut open_writer(&fifo, LONG), &[b"arrives".to_vec()]);
    wait_until(LONG, "the line", || server.received_count() == 1);
    daemon.signal(Signal::SIGTERM);
    assert!(daemon.wait_exit(LONG).success());
    let log = daemon.stderr();
    assert!(
        log.contains(&format!(
            "container credentials at http://127.0.0.1:{port}/creds"
        )),
        "{log}"
    );
    assert!(
        !log.contains(SECRET),
        "the URL's secret leaked into the log:\n{log}"
    );
    assert!(container.credential_fetches.load(Ordering::SeqCst) >= 1);
}

/// ExpiredTokenException (credentials that went stale before their stated expiry) forces one
/// refresh and one retry; nothing is lost.
#[test]
fn expired_token_answer_forces_a_refresh_and_one_retry() {
    let server = FakeKinesis::with_behaviour("test-stream", false, |_, _| Reply::Accept);
    let imds = FakeImds::start(Arc::clone(&server.registry), Duration::from_secs(3600));
    let home = TempDir::new("home-expired");
    let env = imds_env(&server, &home, &imds);
    let dir = TempDir::new("expired");
    let fifo = dir.join("in.pipe");
    let mut daemon =
        start_daemon_with_env(&dir, &fifo, &["--flush-interval", "100ms", "--debug"], &env);
    write_lines_atomically(&mut open_writer(&fifo, LONG), &[b"before".to_vec()]);
    wait_until(LONG, "the first line", || server.received_count() == 1);
    server.registry.expire_all();
    write_lines_atomically(&mut open_writer(&fifo, LONG), &[b"after".to_vec()]);
    wait_until(LONG, "the second line", || server.received_count() == 2);
    daemon.signal(Signal::SIGTERM);
    assert!(daemon.wait_exit(LONG).success());
    assert_eq!(
        server.received(),
        vec![b"before".to_vec(), b"after".to_vec()]
    );
    assert_eq!(server.registry.expired_rejections.load(Ordering::SeqCst), 1);
    // The startup probe reads the role name only; credentials were fetched twice.
    assert_eq!(imds.credential_fetches.load(Ordering::SeqCst), 2);
    let log = daemon.stderr();
    assert!(
        log.contains("credentials expired (ExpiredTokenException); refreshing and retrying"),
        "{log}"
    );
    assert_no_secrets(&log, &server.registry.secrets());
}

/// Instance metadata that failed for a moment at start-up (booting, throttled) made the daemon
/// exit 2 ("no AWS credentials found"), which the unit does not restart. A service that
/// answers is used; its failures are retried while the lines wait.
#[test]
fn instance_metadata_failing_at_start_up_is_retried_while_lines_wait() {
    let server = FakeKinesis::with_behaviour("test-stream", false, |_, _| Reply::Accept);
    let faults = ImdsFaults::default();
    faults.set_token_status(503);
    let imds = FakeImds::start_with(
        Arc::clone(&server.registry),
        Duration::from_secs(3600),
        faults,
    );
    let home = TempDir::new("home-imds-boot");
    let dir = TempDir::new("imds-boot");
    let fifo = dir.join("in.pipe");
    let mut daemon = start_daemon_with_env(
        &dir,
        &fifo,
        &["--flush-interval", "100ms"],
        &imds_env(&server, &home, &imds),
    );
    daemon.wait_log("/latest/api/token: answered HTTP 503; no role yet", LONG);
    write_lines_atomically(&mut open_writer(&fifo, LONG), &[b"waited".to_vec()]);
    // The start-up probe asked twice; fetches for the line keep asking.
    wait_until(LONG, "fetches retried", || {
        imds.faults.token_requests.load(Ordering::SeqCst) >= 6
    });
    assert_eq!(server.received_count(), 0);
    imds.faults.set_token_status(0);
    wait_until(LONG, "the line once metadata answers", || {
        server.received_count() == 1
    });
    daemon.signal(Signal::SIGTERM);
    assert!(daemon.wait_exit(LONG).success(), "{}", daemon.stderr());
    assert_eq!(server.received(), vec![b"waited".to_vec()]);
    assert_no_secrets(&daemon.stderr(), &server.registry.secrets());
}

/// A metadata service that answers the IMDSv2 token request with 403 (or 404) serves IMDSv1:
/// the AWS SDKs then go on without a token, while the daemon found no credentials and exited
/// 2. With `AWS_EC2_METADATA_V1_DISABLED=true` it never goes without a token.
#[test]
fn instance_metadata_refusing_tokens_is_read_without_one_unless_v1_is_disabled() {
    let server = FakeKinesis::with_behaviour("test-stream", false, |_, _| Reply::Accept);
    let faults = ImdsFaults::default();
    faults.set_token_status(403);
    faults.allow_v1.store(true, Ordering::SeqCst);
    let imds = FakeImds::start_with(
        Arc::clone(&server.registry),
        Duration::from_secs(3600),
        faults,
    );
    let home = TempDir::new("home-imds-v1");
    let dir = TempDir::new("imds-v1");
    let fifo = dir.join("in.pipe");
    let mut daemon = start_daemon_with_env(
        &dir,
        &fifo,
        &["--flush-interval", "100ms"],
        &imds_env(&server, &home, &imds),
    );
    write_lines_atomically(&mut open_writer(&fifo, LONG), &[b"v1".to_vec()]);
    wait_until(LONG, "the line", || server.received_count() == 1);
    daemon.signal(Signal::SIGTERM);
    assert!(daemon.wait_exit(LONG).success(), "{}", daemon.stderr());
    assert!(imds.faults.v1_requests.load(Ordering::SeqCst) >= 2);

    // The same service, with IMDSv1 forbidden: it is there, so the daemon runs, but it never
    // asks without a token.
    imds.faults.token_status.store(404, Ordering::SeqCst);
    let v1_before = imds.faults.v1_requests.load(Ordering::SeqCst);
    let mut env = imds_env(&server, &home, &imds);
    env.push(("AWS_EC2_METADATA_V1_DISABLED".into(), "true".into()));
    let dir = TempDir::new("imds-v1-disabled");
    let fifo = dir.join("in.pipe");
    let mut daemon = start_daemon_with_env(&dir, &fifo, &["--flush-interval", "100ms"], &env);
    daemon.wait_log(
        "AWS_EC2_METADATA_V1_DISABLED forbids going without a token",
        LONG,
    );
    write_lines_atomically(&mut open_writer(&fifo, LONG), &[b"v2 only".to_vec()]);
    let tokens = imds.faults.token_requests.load(Ordering::SeqCst);
    wait_until(LONG, "fetches retried", || {
        imds.faults.token_requests.load(Ordering::SeqCst) >= tokens + 4
    });
    assert_eq!(imds.faults.v1_requests.load(Ordering::SeqCst), v1_before);
    assert_eq!(server.received_count(), 1);
    imds.faults.set_token_status(0);
    wait_until(LONG, "the line once tokens are handed out", || {
        server.received_count() == 2
    });
    daemon.signal(Signal::SIGTERM);
    assert!(daemon.wait_exit(LONG).success(), "{}", daemon.stderr());
    assert_eq!(server.received(), vec![b"v1".to_vec(), b"v2 only".to_vec()]);
}

/// A metadata blip at the refresh point threw away credentials that were still valid: delivery
/// stalled (14 s in the field) until the service answered again. The credentials in hand are
/// used until they expire (less a 10 s margin), and the refresh is retried meanwhile.
#[test]
fn a_failed_refresh_keeps_delivering_with_credentials_that_are_still_valid() {
    let server = FakeKinesis::with_behaviour("test-stream", false, |_, _| Reply::Accept);
    // Keys live 30 s: refreshed 12 to 15 s after they were fetched, used until 20 s.
    let imds = FakeImds::start(Arc::clone(&server.registry), Duration::from_secs(30));
    let home = TempDir::new("home-refresh-blip");
    let dir = TempDir::new("refresh-blip");
    let fifo = dir.join("in.pipe");
    let mut daemon = start_daemon_with_env(
        &dir,
        &fifo,
        &["--flush-interval", "50ms"],
        &imds_env(&server, &home, &imds),
    );
    let mut w = open_writer(&fifo, LONG);
    let mut sent = 0;
    let mut send = |w: &mut std::fs::File| {
        write_lines_atomically(w, &[format!("line {sent}").into_bytes()]);
        sent += 1;
        sent
    };
    send(&mut w);
    wait_until(LONG, "the first line", || server.received_count() == 1);
    let fetched_at = Instant::now();
    imds.faults.set_credentials_status(500);
    // Lines keep coming until the refresh has been tried (and failed).
    while imds
        .faults
        .failed_credential_requests
        .load(Ordering::SeqCst)
        == 0
    {
        assert!(fetched_at.elapsed() < Duration::from_secs(17), "no refresh");
        send(&mut w);
        thread::sleep(Duration::from_millis(100));
    }
    let n = send(&mut w);
    let deadline = Instant::now() + Duration::from_secs(3);
    while server.received_count() < n {
        assert!(
            Instant::now() < deadline,
            "the line after the failed refresh ({} of {n} lines arrived):\n{}",
            server.received_count(),
            daemon.stderr()
        );
        thread::sleep(Duration::from_millis(5));
    }
    daemon.wait_log(
        "refreshing credentials failed (EC2 instance metadata at ",
        LONG,
    );
    // The service comes back: the refresh is retried before the keys are given up.
    imds.faults.set_credentials_status(0);
    while imds.credential_fetches.load(Ordering::SeqCst) < 2 {
        assert!(
            fetched_at.elapsed() < Duration::from_secs(20),
            "no refresh before the keys ran out:\n{}",
            daemon.stderr()
        );
        send(&mut w);
        thread::sleep(Duration::from_millis(100));
    }
    let n = send(&mut w);
    wait_until(LONG, "every line", || server.received_count() == n);
    drop(w);
    daemon.signal(Signal::SIGTERM);
    assert!(daemon.wait_exit(LONG).success(), "{}", daemon.stderr());
    assert_eq!(server.registry.expired_rejections.load(Ordering::SeqCst), 0);
    assert_eq!(server.problems(), Vec::<String>::new());
    assert_no_secrets(&daemon.stderr(), &server.registry.secrets());
}

/// Whether no live process is in process group `pgid` (zombies count as gone).
fn group_is_gone(pgid: &str) -> bool {
    let pgid = pgid.trim();
    fs::read_dir("/proc").unwrap().flatten().all(|entry| {
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            return true;
        };
        // After the command name in parentheses: state, parent, process group.
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        fields.first() == Some(&"Z") || fields.get(2) != Some(&pgid)
    })
}

/// Kills the process whose pid is in a file when dropped, so that a failing test leaves
/// nothing running.
struct KillOnDrop(std::path::PathBuf);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(pid) = fs::read_to_string(&self.0) {
            if let Ok(pid) = pid.trim().parse() {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }
}

/// A credential_process that printed its credentials and exited, leaving a background process
/// with its standard output, blocked the sender until that process ended: the reader waited
/// for end of file, lines stopped moving and nothing was logged. The credentials are used at
/// once, and the command's whole process group is killed.
#[test]
fn a_credential_process_leaving_a_child_on_its_output_neither_blocks_delivery_nor_survives() {
    let home = TempDir::new("home-process-child");
    let (pgid_file, pid_file) = (home.join("pgid"), home.join("pid"));
    let _cleanup = KillOnDrop(pid_file.clone());
    credential_process_profile(
        &home,
        &format!(
            "cut -d' ' -f5 /proc/$$/stat > '{}'\n\
             printf '{{\"Version\":1,\"AccessKeyId\":\"{TEST_KEY_ID}\",\"SecretAccessKey\":\"{TEST_SECRET}\"}}'\n\
             sleep 1000 &\necho $! > '{}'\n",
            pgid_file.display(),
            pid_file.display()
        ),
    );
    let server = FakeKinesis::start("test-stream");
    let dir = TempDir::new("process-child");
    let fifo = dir.join("in.pipe");
    let mut daemon = start_daemon_with_env(
        &dir,
        &fifo,
        &["--flush-interval", "100ms"],
        &base_env(&server, &home),
    );
    write_lines_atomically(&mut open_writer(&fifo, LONG), &[b"prompt".to_vec()]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.received_count() == 0 {
        assert!(
            Instant::now() < deadline,
            "the line did not arrive within 10 s:\n{}",
            daemon.stderr()
        );
        thread::sleep(Duration::from_millis(5));
    }
    let pgid = fs::read_to_string(&pgid_file).unwrap();
    assert_ne!(
        pgid.trim(),
        nix::unistd::getpgrp().to_string(),
        "the command runs in a process group of its own"
    );
    wait_until(Duration::from_secs(10), "the command's group gone", || {
        group_is_gone(&pgid)
    });
    daemon.wait_log(
        "still held its output open; its process group was killed",
        LONG,
    );
    daemon.signal(Signal::SIGTERM);
    assert!(daemon.wait_exit(LONG).success());
    assert_eq!(server.received(), vec![b"prompt".to_vec()]);
    assert_no_secrets(&daemon.stderr(), &[]);
}

/// After the first failed attempt, repeated credential failures were logged at debug only: a
/// delivery stalled for hours showed one warning, at its start. A stall is warned about again
/// every 30 s with how long it has lasted and how many attempts failed.
#[test]
fn a_stalled_delivery_is_warned_about_again_with_how_long_and_how_many_attempts() {
    let home = TempDir::new("home-stall");
    let ok = home.join("ok");
    credential_process_profile(&home, &failing_until(&ok));
    let server = FakeKinesis::start("test-stream");
    let dir = TempDir::new("stall");
    let fifo = dir.join("in.pipe");
    let mut daemon = start_daemon_with_env(
        &dir,
        &fifo,
        &["--flush-interval", "100ms"],
        &base_env(&server, &home),
    );
    let started = Instant::now();
    write_lines_atomically(&mut open_writer(&fifo, LONG), &[b"stalled".to_vec()]);
    daemon.wait_log(" WARN delivery to stream test-stream ", LONG);
    let log = daemon.stderr();
    assert!(started.elapsed() >= Duration::from_secs(30), "{log}");
    let warning = log
        .lines()
        .find(|l| l.contains(" WARN delivery to stream test-stream "))
        .unwrap();
    let words: Vec<&str> = warning.split_whitespace().collect();
    let stalled_for: u64 = words[words.iter().position(|w| *w == "for").unwrap() + 1]
        .trim_end_matches("s:")
        .parse()
        .unwrap();
    let attempts: u64 = words[words.iter().position(|w| *w == "attempts").unwrap() - 1]
        .parse()
        .unwrap();
    assert!((30..60).contains(&stalled_for), "{warning}");
    assert!(attempts >= 3, "{warning}");
    assert!(
        warning.ends_with(
            "the last: credentials: credential_process exited 1: sso session expired; run login"
        ),
        "{warning}"
    );
    // The lines about each attempt: a warning for the first only.
    let attempt_warnings = log
        .lines()
        .filter(|l| l.contains(" WARN request to stream test-stream"))
        .count();
    assert_eq!(attempt_warnings, 1, "{log}");
    assert_eq!(server.received_count(), 0);
    fs::write(&ok, "").unwrap();
    wait_until(LONG, "the line", || server.received_count() == 1);
    daemon.wait_log("INFO delivery to stream test-stream", LONG);
    daemon.signal(Signal::SIGTERM);
    assert!(daemon.wait_exit(LONG).success());
    let log = daemon.stderr();
    assert!(log.contains(" resumed after "), "{log}");
    assert_no_secrets(&log, &[]);
}

/// Runs the daemon on a FIFO in `dir` and waits up to 10 s for it to exit on its own; returns
/// its exit code and log (a daemon still running then fails the test).
fn exit_at_start_up(dir: &TempDir, env: &[(String, String)]) -> (Option<i32>, String) {
    let fifo = dir.join("in.pipe");
    let mut daemon = Daemon::start(dir, &kinesis_args(fifo.to_str().unwrap(), &[]), env);
    let code = daemon.wait_exit(Duration::from_secs(10)).code();
    (code, daemon.stderr())
}

/// A role ARN in a profile or in AWS_ROLE_ARN that is not a role ARN was found out only by STS,
/// at every attempt, while the daemon ran and lines piled up; it is wrong configuration, and
/// start-up ends with exit status 2.
#[test]
fn a_malformed_role_arn_in_a_profile_or_the_environment_exits_two() {
    let home = TempDir::new("home-bad-arn");
    fs::create_dir_all(home.join(".aws")).unwrap();
    fs::write(
        home.join(".aws/config"),
        "[profile ci]\nrole_arn = arn:aws:iam::123456789012:user/ci\nsource_profile = ci\naws_access_key_id = A\naws_secret_access_key = S\n",
    )
    .unwrap();
    let server = FakeKinesis::start("test-stream");
    let mut env = base_env(&server, &home);
    env.push(("AWS_PROFILE".into(), "ci".into()));
    let (code, log) = exit_at_start_up(&TempDir::new("bad-arn-profile"), &env);
    assert_eq!(code, Some(2), "{log}");
    assert!(
        log.contains("profile \"ci\" in ")
            && log.contains("role_arn \"arn:aws:iam::123456789012:user/ci\" is not a role ARN"),
        "{log}"
    );
    let token = home.join("token");
    fs::write(&token, WEB_IDENTITY_TOKEN).unwrap();
    let mut env = base_env(&server, &home);
    env.push((
        "AWS_WEB_IDENTITY_TOKEN_FILE".into(),
        token.to_str().unwrap().into(),
    ));
    env.push(("AWS_ROLE_ARN".into(), "pod-role".into()));
    let (code, log) = exit_at_start_up(&TempDir::new("bad-arn-env"), &env);
    assert_eq!(code, Some(2), "{log}");
    assert!(
        log.contains("AWS_ROLE_ARN: \"pod-role\" is not a role ARN"),
        "{log}"
    );
    assert!(server.sts_calls().is_empty());
}
