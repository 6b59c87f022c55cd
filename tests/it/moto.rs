//! Against moto, which verifies SigV4 signatures: IAM user keys, a wrong secret, `--role-arn`
//! through moto's STS, a profile role over a source profile, and web identity. Each test runs
//! its own moto on 127.0.0.1 (installed under target/peers by `scripts/peers`).

use std::fs;
use std::time::Duration;

use crate::support::*;
use fifo2kinesis::aws::Credentials;
use nix::sys::signal::Signal;

const LONG: Duration = Duration::from_secs(60);
const STREAM: &str = "moto-stream";
const ROLE_ARN: &str = "arn:aws:iam::123456789012:role/writer-role";
const POLICY: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["kinesis:*","sts:AssumeRole"],"Resource":"*"}]}"#;
const TRUST: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::123456789012:user/writer"},"Action":"sts:AssumeRole"}]}"#;

/// moto with an IAM user `writer` (kinesis and sts:AssumeRole allowed), its access key, a
/// role it may assume, and a stream.
struct World {
    peer: Peer,
    id: String,
    secret: String,
}

impl World {
    fn new() -> World {
        let peer = Peer::moto();
        // The first five requests are not checked: just enough to set up IAM.
        let admin = AwsClient::test_keys(&peer.url);
        let v = ("Version", "2010-05-08");
        admin.query(
            "iam",
            &[("Action", "CreateUser"), v, ("UserName", "writer")],
        );
        admin.query(
            "iam",
            &[
                ("Action", "PutUserPolicy"),
                v,
                ("UserName", "writer"),
                ("PolicyName", "p"),
                ("PolicyDocument", POLICY),
            ],
        );
        let xml = admin.query(
            "iam",
            &[("Action", "CreateAccessKey"), v, ("UserName", "writer")],
        );
        let (id, secret) = (
            xml_text(&xml, "AccessKeyId"),
            xml_text(&xml, "SecretAccessKey"),
        );
        admin.query(
            "iam",
            &[
                ("Action", "CreateRole"),
                v,
                ("RoleName", "writer-role"),
                ("AssumeRolePolicyDocument", TRUST),
            ],
        );
        admin.query(
            "iam",
            &[
                ("Action", "PutRolePolicy"),
                v,
                ("RoleName", "writer-role"),
                ("PolicyName", "p"),
                ("PolicyDocument", POLICY),
            ],
        );
        let world = World { peer, id, secret };
        world.client().create_stream(STREAM);
        world
    }

    fn client(&self) -> AwsClient {
        AwsClient::new(
            &self.peer.url,
            Credentials::new(&self.id, &self.secret, None, None, "test"),
        )
    }

    fn env(&self, home: &TempDir) -> Vec<(String, String)> {
        vec![
            ("AWS_REGION".into(), "us-east-1".into()),
            ("AWS_ENDPOINT_URL".into(), self.peer.url.clone()),
            ("HOME".into(), home.path().to_str().unwrap().into()),
        ]
    }

    /// Starts the daemon with `env` and `extra` options.
    fn start(
        &self,
        dir: &TempDir,
        env: &[(String, String)],
        extra: &[&str],
    ) -> (Daemon, std::path::PathBuf) {
        let fifo = dir.join("in.pipe");
        let mut args = vec![
            "--fifo-name",
            fifo.to_str().unwrap(),
            "--stream-name",
            STREAM,
            "--flush-interval",
            "100ms",
            "--debug",
        ];
        args.extend_from_slice(extra);
        let daemon = Daemon::start(dir, &args, env);
        wait_until(LONG, "the FIFO", || fifo.exists());
        (daemon, fifo)
    }

    /// Runs the daemon, writes `lines`, waits for `done` in its log, stops it, checks its exit
    /// status is `exit`, returns its log.
    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        name: &str,
        env: &[(String, String)],
        extra: &[&str],
        lines: &[Vec<u8>],
        done: &str,
        exit: i32,
    ) -> String {
        let dir = TempDir::new(name);
        let (mut daemon, fifo) = self.start(&dir, env, extra);
        write_lines_atomically(&mut open_writer(&fifo, LONG), lines);
        wait_for_log(&daemon, done);
        daemon.signal(Signal::SIGTERM);
        let status = daemon.wait_exit(LONG);
        let log = daemon.stderr();
        assert_eq!(status.code(), Some(exit), "{log}");
        assert!(
            !log.contains(&self.secret),
            "the IAM secret leaked into the log"
        );
        assert!(
            !log.to_ascii_lowercase().contains("signature="),
            "a signature leaked into the log"
        );
        log
    }

    /// Turns moto's signature checking on or off.
    fn check_signatures(&self, on: bool) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let resp = agent
            .post(format!("{}/moto-api/reset-auth", self.peer.url))
            .header("content-type", "text/plain")
            .send(if on { "0" } else { "inf" })
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
    }
}

/// Asks for stats until the log contains `needle`.
fn wait_for_log(daemon: &Daemon, needle: &str) {
    wait_until(LONG, needle, || {
        daemon.signal(Signal::SIGUSR1);
        std::thread::sleep(Duration::from_millis(50));
        daemon.stderr().contains(needle)
    });
}

fn sent_marker(n: usize) -> String {
    format!("records_sent={n} ")
}

fn lines(name: &str) -> Vec<Vec<u8>> {
    (0..25)
        .map(|i| format!("{name} {i}").into_bytes())
        .collect()
}

#[test]
fn iam_user_keys_from_the_environment_are_accepted() {
    let w = World::new();
    let home = TempDir::new("moto-env");
    let mut env = w.env(&home);
    env.push(("AWS_ACCESS_KEY_ID".into(), w.id.clone()));
    env.push(("AWS_SECRET_ACCESS_KEY".into(), w.secret.clone()));
    let sent = lines("env");
    w.run("moto-env", &env, &[], &sent, &sent_marker(sent.len()), 0);
    assert_eq!(w.client().read_all(STREAM), sent);
}

#[test]
fn moto_is_reached_through_a_real_proxy() {
    let w = World::new();
    let home = TempDir::new("moto-tinyproxy");
    let port: u16 = w.peer.url.rsplit(':').next().unwrap().parse().unwrap();
    let proxy = crate::support::proxy::Tinyproxy::start(&home, &[port]);
    let mut env = w.env(&home);
    env.push(("AWS_ACCESS_KEY_ID".into(), w.id.clone()));
    env.push(("AWS_SECRET_ACCESS_KEY".into(), w.secret.clone()));
    // moto speaks plain HTTP: the request still goes through a CONNECT tunnel.
    env.push(("HTTP_PROXY".into(), proxy.url.clone()));
    let sent = lines("proxied");
    w.run(
        "moto-proxied",
        &env,
        &[],
        &sent,
        &sent_marker(sent.len()),
        0,
    );
    assert_eq!(w.client().read_all(STREAM), sent);
    proxy.assert_tunnelled_to(&format!("127.0.0.1:{port}"));
}

#[test]
fn a_wrong_secret_is_rejected_and_logged_with_its_code() {
    let w = World::new();
    let home = TempDir::new("moto-wrong");
    let mut env = w.env(&home);
    let wrong = format!("{}x", w.secret);
    env.push(("AWS_ACCESS_KEY_ID".into(), w.id.clone()));
    env.push(("AWS_SECRET_ACCESS_KEY".into(), wrong.clone()));
    // No failed-attempts directory: the refused lines are counted as lost, exit status 1.
    let log = w.run(
        "moto-wrong",
        &env,
        &[],
        &lines("wrong"),
        "dropped 25 lines",
        1,
    );
    assert!(log.contains("SignatureDoesNotMatch"), "{log}");
    assert!(!log.contains(&wrong));
    assert_eq!(w.client().read_all(STREAM), Vec::<Vec<u8>>::new());
}

#[test]
fn role_arn_assumes_the_role_at_moto_sts() {
    let w = World::new();
    let home = TempDir::new("moto-role");
    let mut env = w.env(&home);
    env.push(("AWS_ACCESS_KEY_ID".into(), w.id.clone()));
    env.push(("AWS_SECRET_ACCESS_KEY".into(), w.secret.clone()));
    let sent = lines("role");
    let log = w.run(
        "moto-role",
        &env,
        &[
            "--role-arn",
            ROLE_ARN,
            "--role-session-name",
            "moto-session",
        ],
        &sent,
        &sent_marker(sent.len()),
        0,
    );
    assert!(
        log.contains(
            "role arn:aws:iam::123456789012:role/writer-role (session moto-session) assumed"
        ),
        "{log}"
    );
    assert_eq!(w.client().read_all(STREAM), sent);
}

#[test]
fn profile_role_with_source_profile_at_moto_sts() {
    let w = World::new();
    let home = TempDir::new("moto-profile");
    fs::create_dir_all(home.join(".aws")).unwrap();
    fs::write(
        home.join(".aws/config"),
        format!("[profile ci]\nrole_arn = {ROLE_ARN}\nsource_profile = base\n"),
    )
    .unwrap();
    fs::write(
        home.join(".aws/credentials"),
        format!(
            "[base]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            w.id, w.secret
        ),
    )
    .unwrap();
    let mut env = w.env(&home);
    env.push(("AWS_PROFILE".into(), "ci".into()));
    let sent = lines("profile");
    let log = w.run(
        "moto-profile",
        &env,
        &[],
        &sent,
        &sent_marker(sent.len()),
        0,
    );
    assert!(log.contains("credentials: profile \"ci\""), "{log}");
    assert_eq!(w.client().read_all(STREAM), sent);
}

/// AssumeRoleWithWebIdentity is unsigned by design, and moto cannot take an unsigned request
/// while it checks signatures; so checking is off for the first fetch and on for what follows,
/// which moto verifies against the web identity session's keys.
#[test]
fn web_identity_at_moto_sts() {
    let w = World::new();
    let home = TempDir::new("moto-web");
    let token = home.join("token");
    let jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6ZGVmYXVsdDp3cml0ZXIifQ.c2lnbmF0dXJl";
    fs::write(&token, jwt).unwrap();
    let mut env = w.env(&home);
    env.push((
        "AWS_WEB_IDENTITY_TOKEN_FILE".into(),
        token.to_str().unwrap().into(),
    ));
    env.push(("AWS_ROLE_ARN".into(), ROLE_ARN.into()));
    let dir = TempDir::new("moto-web-run");
    let (mut daemon, fifo) = w.start(&dir, &env, &[]);
    w.check_signatures(false);
    write_lines_atomically(&mut open_writer(&fifo, LONG), &[b"first".to_vec()]);
    wait_for_log(&daemon, &sent_marker(1));
    w.check_signatures(true);
    let mut sent = lines("web");
    write_lines_atomically(&mut open_writer(&fifo, LONG), &sent);
    wait_for_log(&daemon, &sent_marker(1 + sent.len()));
    daemon.signal(Signal::SIGTERM);
    assert!(daemon.wait_exit(LONG).success());
    let log = daemon.stderr();
    assert!(
        !log.contains(jwt),
        "the web identity token leaked into the log"
    );
    assert!(log.contains("credentials: web identity token"), "{log}");
    sent.insert(0, b"first".to_vec());
    assert_eq!(w.client().read_all(STREAM), sent);
}
