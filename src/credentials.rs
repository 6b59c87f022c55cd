//! Where the sender gets AWS credentials from.
//!
//! A [`Provider`] hands out credentials when asked and may cache and refresh them; the sender
//! thread asks before every request and calls [`Provider::invalidate`] when the service says
//! they expired. Credential work therefore never runs on the poll loop. Credentials are held in
//! `aws_credential_types::Credentials`, whose `Debug` output redacts the secret parts; nothing
//! here logs a key, secret or token.

use std::ffi::OsString;
use std::fmt;
use std::sync::{mpsc, Arc};
use std::time::{Duration, SystemTime};

pub use aws_credential_types::Credentials;

use crate::random::Rng;
use crate::stop::StopSignal;

/// Temporary credentials are fetched again this long before they expire (or half their
/// lifetime, if that is shorter), less up to a fifth of it as jitter.
pub const REFRESH_AHEAD: Duration = Duration::from_secs(300);

/// Credentials could not be had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialsError {
    /// Where the problem is (`environment`, `STS AssumeRole`…).
    pub source: String,
    /// What went wrong, with no secret in it.
    pub message: String,
}

impl fmt::Display for CredentialsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.source, self.message)
    }
}

impl std::error::Error for CredentialsError {}

impl CredentialsError {
    /// An error from `source`.
    pub fn new(source: impl Into<String>, message: impl Into<String>) -> Self {
        CredentialsError {
            source: source.into(),
            message: message.into(),
        }
    }
}

/// A source of credentials for the sender.
pub trait Provider: Send {
    /// Credentials valid at `now`, from cache or freshly fetched.
    fn credentials(&mut self, now: SystemTime) -> Result<Credentials, CredentialsError>;
    /// Forgets cached credentials, so the next call fetches new ones.
    fn invalidate(&mut self) {}
}

/// Something that fetches fresh credentials: STS, instance metadata, a container endpoint, a
/// process. Wrap it in [`Refreshing`] to cache what it returns.
pub trait Fetch: Send {
    /// Fetches credentials now.
    fn fetch(&mut self, now: SystemTime) -> Result<Credentials, CredentialsError>;
}

/// Caches a [`Fetch`]'s credentials and fetches again ahead of their expiry.
pub struct Refreshing<F> {
    fetch: F,
    cached: Option<(Credentials, Option<SystemTime>)>,
    rng: Rng,
}

impl<F: Fetch> Refreshing<F> {
    /// A cache in front of `fetch`.
    pub fn new(fetch: F) -> Self {
        Refreshing {
            fetch,
            cached: None,
            rng: Rng::from_entropy(),
        }
    }
}

impl<F: Fetch> Provider for Refreshing<F> {
    fn credentials(&mut self, now: SystemTime) -> Result<Credentials, CredentialsError> {
        if let Some((creds, refresh_at)) = &self.cached {
            if refresh_at.is_none_or(|at| now < at) {
                return Ok(creds.clone());
            }
        }
        let creds = self.fetch.fetch(now)?;
        crate::stats::count_credential_fetch();
        let at = refresh_time(now, creds.expiry(), &mut self.rng);
        if let Some(at) = at {
            crate::log!(
                Debug,
                "fetched credentials; next refresh in {:.0?}",
                at.duration_since(now).unwrap_or_default()
            );
        }
        self.cached = Some((creds.clone(), at));
        Ok(creds)
    }

    fn invalidate(&mut self) {
        self.cached = None;
    }
}

/// When credentials fetched at `now` that expire at `expiry` should be fetched again: ahead of
/// expiry by five minutes or half their lifetime, whichever is shorter, and up to a fifth of
/// that earlier still (jitter, so that many daemons do not refresh at once). `None` for
/// credentials that do not expire.
pub fn refresh_time(
    now: SystemTime,
    expiry: Option<SystemTime>,
    rng: &mut Rng,
) -> Option<SystemTime> {
    let expiry = expiry?;
    let lifetime = expiry.duration_since(now).unwrap_or_default();
    let ahead = REFRESH_AHEAD.min(lifetime / 2);
    let jitter = Duration::from_millis(rng.below(ahead.as_millis() as u64 / 5 + 1));
    Some(expiry - ahead - jitter)
}

/// Reads credentials from JSON with `AccessKeyId`, `SecretAccessKey`, an optional session token
/// under `token_field` and an optional RFC 3339 `Expiration` (the metadata services' and
/// `credential_process`'s format). Errors never quote the values.
pub fn parse_json_credentials(
    body: &[u8],
    token_field: &str,
    provider: &'static str,
) -> Result<Credentials, String> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("the answer is not JSON ({e})"))?;
    let field = |name: &str| {
        v.get(name)
            .and_then(serde_json::Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
    };
    let id = field("AccessKeyId").ok_or("the answer has no AccessKeyId")?;
    let secret = field("SecretAccessKey").ok_or("the answer has no SecretAccessKey")?;
    let token = field(token_field).map(String::from);
    let expiry = match field("Expiration") {
        None => None,
        Some(e) => Some(
            crate::clock::parse_rfc3339(e).ok_or_else(|| format!("unreadable Expiration {e:?}"))?,
        ),
    };
    Ok(Credentials::new(id, secret, token, expiry, provider))
}

/// Credentials that never change (from the environment or a profile's static keys).
pub struct Static(pub Credentials);

impl Provider for Static {
    fn credentials(&mut self, _now: SystemTime) -> Result<Credentials, CredentialsError> {
        Ok(self.0.clone())
    }
}

/// A provider whose fetches never outlive the stop deadline: fetching runs on a thread of its
/// own, and once the daemon is stopping the caller waits for it only until the deadline (a hung
/// STS endpoint or `credential_process` must not keep the sender from handing its batches
/// back). Credentials far from expiry are served from a copy here, without the thread.
pub struct Bounded {
    requests: mpsc::Sender<Request>,
    answers: mpsc::Receiver<Result<Credentials, CredentialsError>>,
    stop: Arc<StopSignal>,
    /// A fetch was asked for and not answered yet.
    asked: bool,
    cached: Option<Credentials>,
}

enum Request {
    Get(SystemTime),
    Invalidate,
}

/// How long a wait for a fetch lasts before the stop deadline is looked at again.
const WAIT_SLICE: Duration = Duration::from_millis(100);

/// Credentials this close to expiry (or closer) are always asked of the inner provider, which
/// refreshes them ahead of time.
const SERVE_COPY_UNTIL: Duration = Duration::from_secs(2 * REFRESH_AHEAD.as_secs());

impl Bounded {
    /// Runs `inner` on its own thread, bounded by `stop`'s deadline.
    pub fn new(mut inner: Box<dyn Provider>, stop: Arc<StopSignal>) -> std::io::Result<Bounded> {
        let (requests, inbox) = mpsc::channel::<Request>();
        let (outbox, answers) = mpsc::channel();
        std::thread::Builder::new()
            .name("credentials".into())
            .spawn(move || {
                for request in inbox.iter() {
                    match request {
                        Request::Get(now) => {
                            if outbox.send(inner.credentials(now)).is_err() {
                                return;
                            }
                        }
                        Request::Invalidate => inner.invalidate(),
                    }
                }
            })?;
        Ok(Bounded {
            requests,
            answers,
            stop,
            asked: false,
            cached: None,
        })
    }
}

impl Provider for Bounded {
    fn credentials(&mut self, now: SystemTime) -> Result<Credentials, CredentialsError> {
        if let Some(c) = &self.cached {
            let far = c
                .expiry()
                .is_none_or(|e| e.duration_since(now).is_ok_and(|d| d > SERVE_COPY_UNTIL));
            if far {
                return Ok(c.clone());
            }
        }
        if !self.asked {
            self.requests.send(Request::Get(now)).map_err(|_| {
                CredentialsError::new("credentials", "the credentials thread ended")
            })?;
            self.asked = true;
        }
        // Waits in slices, so that a stop that comes while waiting is seen.
        let answer = loop {
            let slice = self.stop.bound(WAIT_SLICE);
            match self.answers.recv_timeout(slice) {
                Ok(answer) => break answer,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(CredentialsError::new(
                        "credentials",
                        "the credentials thread ended",
                    ))
                }
                Err(mpsc::RecvTimeoutError::Timeout)
                    if self
                        .stop
                        .deadline()
                        .is_some_and(|d| std::time::Instant::now() >= d) =>
                {
                    return Err(CredentialsError::new(
                        "credentials",
                        "no credentials before the stop deadline",
                    ))
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
        };
        self.asked = false;
        if let Ok(c) = &answer {
            self.cached = Some(c.clone());
        }
        answer
    }

    fn invalidate(&mut self) {
        self.cached = None;
        let _ = self.requests.send(Request::Invalidate);
    }
}

/// Reads `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN` through `env`.
/// Blank values count as unset. `Ok(None)` when neither key is set.
pub fn from_env(
    env: impl Fn(&str) -> Option<OsString>,
) -> Result<Option<Credentials>, CredentialsError> {
    let get = |name: &str| {
        env(name)
            .and_then(|v| v.into_string().ok())
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let (id, secret, token) = (
        get("AWS_ACCESS_KEY_ID"),
        get("AWS_SECRET_ACCESS_KEY"),
        get("AWS_SESSION_TOKEN"),
    );
    match (id, secret) {
        (Some(id), Some(secret)) => Ok(Some(Credentials::new(
            id,
            secret,
            token,
            None,
            "environment",
        ))),
        (None, None) => Ok(None),
        (Some(_), None) => Err(CredentialsError {
            source: "environment".into(),
            message: "AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not".into(),
        }),
        (None, Some(_)) => Err(CredentialsError {
            source: "environment".into(),
            message: "AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[test]
    fn environment_keys_with_and_without_token() {
        let c = from_env(env(&[
            ("AWS_ACCESS_KEY_ID", "AKID"),
            ("AWS_SECRET_ACCESS_KEY", "s3cr3t"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(c.access_key_id(), "AKID");
        assert_eq!(c.session_token(), None);
        let c = from_env(env(&[
            ("AWS_ACCESS_KEY_ID", "AKID"),
            ("AWS_SECRET_ACCESS_KEY", "s"),
            ("AWS_SESSION_TOKEN", "T"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(c.session_token(), Some("T"));
        assert!(!format!("{c:?}").contains("s3cr3t"));
    }

    #[test]
    fn refresh_comes_ahead_of_expiry_with_jitter() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut rng = Rng::with_seed(5);
        assert_eq!(refresh_time(now, None, &mut rng), None);
        for _ in 0..100 {
            // An hour-long credential: between 6 and 5 minutes before expiry.
            let exp = now + Duration::from_secs(3600);
            let at = refresh_time(now, Some(exp), &mut rng).unwrap();
            assert!(at >= exp - Duration::from_secs(360) && at <= exp - Duration::from_secs(300));
            // A 60-second credential: after 24 s, at most 30 s in.
            let exp = now + Duration::from_secs(60);
            let at = refresh_time(now, Some(exp), &mut rng).unwrap();
            assert!(
                at >= now + Duration::from_secs(24) && at <= now + Duration::from_secs(30),
                "{at:?}"
            );
        }
        // Already expired: refresh at once.
        assert!(refresh_time(now, Some(now - Duration::from_secs(1)), &mut rng).unwrap() <= now);
    }

    struct Counting(u32, u64);
    impl Fetch for Counting {
        fn fetch(&mut self, now: SystemTime) -> Result<Credentials, CredentialsError> {
            self.0 += 1;
            Ok(Credentials::new(
                format!("K{}", self.0),
                "s",
                Some("t".into()),
                Some(now + Duration::from_secs(self.1)),
                "test",
            ))
        }
    }

    #[test]
    fn refreshing_caches_until_the_refresh_time_and_after_invalidate() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut p = Refreshing::new(Counting(0, 60));
        assert_eq!(p.credentials(t0).unwrap().access_key_id(), "K1");
        assert_eq!(
            p.credentials(t0 + Duration::from_secs(20))
                .unwrap()
                .access_key_id(),
            "K1"
        );
        assert_eq!(
            p.credentials(t0 + Duration::from_secs(31))
                .unwrap()
                .access_key_id(),
            "K2"
        );
        p.invalidate();
        assert_eq!(
            p.credentials(t0 + Duration::from_secs(32))
                .unwrap()
                .access_key_id(),
            "K3"
        );
    }

    #[test]
    fn blank_is_unset_and_half_a_pair_is_an_error() {
        assert_eq!(
            from_env(env(&[
                ("AWS_ACCESS_KEY_ID", " "),
                ("AWS_SECRET_ACCESS_KEY", "")
            ]))
            .unwrap(),
            None
        );
        let e = from_env(env(&[("AWS_ACCESS_KEY_ID", "AKID")])).unwrap_err();
        assert!(e.to_string().contains("AWS_SECRET_ACCESS_KEY"));
    }
}
