//! Fake credential services on 127.0.0.1: EC2 instance metadata (IMDSv2) and the container
//! credentials endpoint. Both hand out short-lived keys from a [`Registry`] that the fake
//! Kinesis server consults, so requests signed with expired keys are rejected the way AWS does.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use super::http::{Response, Server};

/// Keys handed out, with their tokens and expiry.
#[derive(Default)]
pub struct Registry {
    keys: Mutex<HashMap<String, (String, String, Instant)>>,
    issued: AtomicUsize,
    /// Requests rejected because their key had expired.
    pub expired_rejections: AtomicUsize,
}

/// How a request's key stands.
pub enum KeyStatus {
    Unknown,
    Valid { token: String },
    Expired,
}

impl Registry {
    /// Issues a new key valid for `lifetime`: (id, secret, token, RFC 3339 expiry).
    pub fn issue(&self, lifetime: Duration) -> (String, String, String, String) {
        let n = self.issued.fetch_add(1, Ordering::SeqCst) + 1;
        let (id, secret, token) = (
            format!("ASIAFAKE{n:08}"),
            format!("fake-secret-{n}-never-logged"),
            format!("fake-token-{n}-never-logged"),
        );
        self.keys.lock().unwrap().insert(
            id.clone(),
            (secret.clone(), token.clone(), Instant::now() + lifetime),
        );
        let expiry = SystemTime::now() + lifetime;
        (id, secret, token, rfc3339(expiry))
    }

    /// Makes every key handed out so far expired, as if revoked early.
    pub fn expire_all(&self) {
        let now = Instant::now();
        for (_, _, exp) in self.keys.lock().unwrap().values_mut() {
            *exp = now;
        }
    }

    /// Every secret and token handed out, for log checks.
    pub fn secrets(&self) -> Vec<String> {
        self.keys
            .lock()
            .unwrap()
            .values()
            .flat_map(|(s, t, _)| [s.clone(), t.clone()])
            .collect()
    }

    pub fn status(&self, key_id: &str) -> KeyStatus {
        match self.keys.lock().unwrap().get(key_id) {
            None => KeyStatus::Unknown,
            Some((_, _, exp)) if Instant::now() >= *exp => KeyStatus::Expired,
            Some((_, token, _)) => KeyStatus::Valid {
                token: token.clone(),
            },
        }
    }
}

fn rfc3339(t: SystemTime) -> String {
    fifo2kinesis::UtcDateTime::from_system(t).rfc3339_millis()
}

fn credentials_json(reg: &Registry, lifetime: Duration) -> String {
    let (id, secret, token, exp) = reg.issue(lifetime);
    serde_json::json!({"Code": "Success", "Type": "AWS-HMAC", "AccessKeyId": id, "SecretAccessKey": secret, "Token": token, "Expiration": exp}).to_string()
}

/// Faults a [`FakeImds`] injects, changeable while it runs. Status 0 means "answer normally".
#[derive(Default)]
pub struct ImdsFaults {
    /// The status the token request (`PUT /latest/api/token`) is answered with.
    pub token_status: AtomicU16,
    /// The status requests for the role's credentials are answered with.
    pub credentials_status: AtomicU16,
    /// Whether requests without a token are served (IMDSv1); else they get 401.
    pub allow_v1: AtomicBool,
    /// Token requests received.
    pub token_requests: AtomicUsize,
    /// Requests served without a token.
    pub v1_requests: AtomicUsize,
    /// Credential requests answered with `credentials_status`.
    pub failed_credential_requests: AtomicUsize,
}

impl ImdsFaults {
    pub fn set_token_status(&self, status: u16) {
        self.token_status.store(status, Ordering::SeqCst);
    }

    pub fn set_credentials_status(&self, status: u16) {
        self.credentials_status.store(status, Ordering::SeqCst);
    }
}

/// A fake IMDSv2 serving role `test-role` with keys living `lifetime`.
pub struct FakeImds {
    pub server: Server,
    pub credential_fetches: Arc<AtomicUsize>,
    pub faults: Arc<ImdsFaults>,
}

impl FakeImds {
    pub fn start(registry: Arc<Registry>, lifetime: Duration) -> FakeImds {
        FakeImds::start_with(registry, lifetime, ImdsFaults::default())
    }

    /// A fake injecting `faults` (kept in [`FakeImds::faults`] to be changed later).
    pub fn start_with(registry: Arc<Registry>, lifetime: Duration, faults: ImdsFaults) -> FakeImds {
        let fetches = Arc::new(AtomicUsize::new(0));
        let faults = Arc::new(faults);
        let counter = Arc::clone(&fetches);
        let f = Arc::clone(&faults);
        let server = Server::start(move |req| {
            let token = req.header("x-aws-ec2-metadata-token");
            let token_ok = token == Some("imds-session-token")
                || (token.is_none() && f.allow_v1.load(Ordering::SeqCst));
            match (req.method.as_str(), req.path.as_str()) {
                ("PUT", "/latest/api/token")
                    if req.header("x-aws-ec2-metadata-token-ttl-seconds").is_some() =>
                {
                    f.token_requests.fetch_add(1, Ordering::SeqCst);
                    match f.token_status.load(Ordering::SeqCst) {
                        0 => Response::new(200, "text/plain", "imds-session-token"),
                        status => Response::new(status, "text/plain", ""),
                    }
                }
                ("GET", _) if !token_ok => Response::new(401, "text/plain", ""),
                ("GET", path) => {
                    if token.is_none() {
                        f.v1_requests.fetch_add(1, Ordering::SeqCst);
                    }
                    match path {
                        "/latest/meta-data/iam/security-credentials/" => {
                            Response::new(200, "text/plain", "test-role")
                        }
                        "/latest/meta-data/iam/security-credentials/test-role" => {
                            match f.credentials_status.load(Ordering::SeqCst) {
                                0 => {
                                    counter.fetch_add(1, Ordering::SeqCst);
                                    Response::new(
                                        200,
                                        "text/plain",
                                        credentials_json(&registry, lifetime),
                                    )
                                }
                                status => {
                                    f.failed_credential_requests.fetch_add(1, Ordering::SeqCst);
                                    Response::new(status, "text/plain", "")
                                }
                            }
                        }
                        "/latest/meta-data/placement/region" => {
                            Response::new(200, "text/plain", "us-east-1")
                        }
                        _ => Response::new(404, "text/plain", ""),
                    }
                }
                _ => Response::new(404, "text/plain", ""),
            }
        });
        FakeImds {
            server,
            credential_fetches: fetches,
            faults,
        }
    }
}

/// A fake container credentials endpoint at `/creds` (any query), requiring `Authorization: <auth>`.
pub struct FakeContainer {
    pub server: Server,
    pub credential_fetches: Arc<AtomicUsize>,
}

impl FakeContainer {
    pub fn start(registry: Arc<Registry>, lifetime: Duration, auth: &'static str) -> FakeContainer {
        let fetches = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&fetches);
        let server = Server::start(move |req| {
            // A query (which may carry a secret) is the caller's; the path is ours.
            if req.path.split('?').next() != Some("/creds") {
                return Response::new(404, "application/json", "{}");
            }
            if req.header("authorization") != Some(auth) {
                return Response::new(
                    403,
                    "application/json",
                    r#"{"message":"bad authorization"}"#,
                );
            }
            counter.fetch_add(1, Ordering::SeqCst);
            Response::new(
                200,
                "application/json",
                credentials_json(&registry, lifetime),
            )
        });
        FakeContainer {
            server,
            credential_fetches: fetches,
        }
    }
}
