//! Where the sender gets AWS credentials from.
//!
//! A [`Provider`] hands out credentials when asked and may cache and refresh them; the sender
//! thread asks before every request and calls [`Provider::invalidate`] when the service says
//! they expired. [`Refreshing`] caches what a [`Fetch`] (STS, a metadata service, a process)
//! returns, fetches again ahead of expiry, and keeps using credentials that are still valid
//! while a refresh fails. [`Bounded`] runs the whole chain on a thread of its own, so that
//! credential work never runs on the poll loop, never holds up the sender while valid
//! credentials are in hand, and never outlives the stop deadline. Credentials are held in
//! `aws_credential_types::Credentials`, whose `Debug` output redacts the secret parts; nothing
//! here logs a key, secret or token.

use std::ffi::OsString;
use std::sync::{mpsc, Arc};
use std::time::{Duration, SystemTime};

pub use aws_credential_types::Credentials;

use super::Error;
use crate::random::Rng;
use crate::stop::StopSignal;

/// Temporary credentials are fetched again this long before they expire (or half their
/// lifetime, if that is shorter), less up to a fifth of it as jitter.
pub const REFRESH_AHEAD: Duration = Duration::from_secs(300);

/// A source of credentials for the sender.
pub trait Provider: Send {
    /// Credentials valid at `now`, from cache or freshly fetched.
    fn credentials(&mut self, now: SystemTime) -> Result<Credentials, Error>;
    /// Forgets cached credentials, so the next call fetches new ones.
    fn invalidate(&mut self) {}
}

/// Something that fetches fresh credentials: STS, instance metadata, a container endpoint, a
/// process. Wrap it in [`Refreshing`] to cache what it returns.
pub trait Fetch: Send {
    /// Fetches credentials now.
    fn fetch(&mut self, now: SystemTime) -> Result<Credentials, Error>;
}

/// Caches a [`Fetch`]'s credentials and fetches again ahead of their expiry.
///
/// A refresh that fails while the credentials in hand are still valid keeps them: they are
/// handed out until [`EXPIRY_MARGIN`] before they expire, and the refresh is tried again
/// after a backoff ([`retry_refresh_in`]). Only when no valid credentials are left does a
/// failure reach the caller.
pub struct Refreshing<F> {
    fetch: F,
    cached: Option<Cached>,
    rng: Rng,
}

struct Cached {
    creds: Credentials,
    /// When to fetch again; `None` for credentials that do not expire.
    refresh_at: Option<SystemTime>,
    /// Refreshes that failed in a row while these were still valid.
    failures: u32,
}

/// Credentials this close to expiry are no longer handed out: a request signed with them could
/// arrive after they expired.
pub const EXPIRY_MARGIN: Duration = Duration::from_secs(10);

/// Whether `creds` may still be used at `now`.
pub fn usable(creds: &Credentials, now: SystemTime) -> bool {
    creds
        .expiry()
        .is_none_or(|e| e.duration_since(now).is_ok_and(|d| d > EXPIRY_MARGIN))
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

    /// After a failed refresh: the cached credentials if they are still valid, with the next
    /// attempt scheduled.
    fn keep_cached(&mut self, now: SystemTime, e: &Error) -> Option<Credentials> {
        let c = self.cached.as_mut()?;
        c.failures += 1;
        if !usable(&c.creds, now) {
            return None;
        }
        let left = c
            .creds
            .expiry()
            .and_then(|exp| exp.duration_since(now).ok())
            .unwrap_or_default();
        let wait = retry_refresh_in(c.failures, left, &mut self.rng);
        c.refresh_at = Some(now + wait);
        let level = if c.failures == 1 {
            crate::log::Level::Warn
        } else {
            crate::log::Level::Debug
        };
        crate::log::write(
            level,
            format_args!(
                "refreshing credentials failed ({e}); using the current ones, valid for {}s more, and trying again in {:.1}s",
                left.as_secs(),
                wait.as_secs_f64()
            ),
        );
        Some(c.creds.clone())
    }
}

impl<F: Fetch> Provider for Refreshing<F> {
    fn credentials(&mut self, now: SystemTime) -> Result<Credentials, Error> {
        if let Some(c) = &self.cached {
            if c.refresh_at.is_none_or(|at| now < at) && usable(&c.creds, now) {
                return Ok(c.creds.clone());
            }
        }
        let creds = match self.fetch.fetch(now) {
            Ok(creds) => creds,
            Err(e) => return self.keep_cached(now, &e).ok_or(e),
        };
        crate::stats::count_credential_fetch();
        let at = refresh_time(now, creds.expiry(), &mut self.rng);
        let failed = self.cached.as_ref().map_or(0, |c| c.failures);
        if failed > 0 {
            crate::log!(Info, "credentials refreshed after {failed} failed attempts");
        }
        if let Some(at) = at {
            crate::log!(
                Debug,
                "fetched credentials; next refresh in {:.0?}",
                at.duration_since(now).unwrap_or_default()
            );
        }
        self.cached = Some(Cached {
            creds: creds.clone(),
            refresh_at: at,
            failures: 0,
        });
        Ok(creds)
    }

    fn invalidate(&mut self) {
        self.cached = None;
    }
}

/// How long to wait before refresh attempt `failures + 1` when credentials valid for `left`
/// are in hand: 1 s, doubling up to a minute, never more than half of what is left (so that
/// several attempts come before they expire), less up to half as jitter.
pub fn retry_refresh_in(failures: u32, left: Duration, rng: &mut Rng) -> Duration {
    let ceiling = Duration::from_secs(1)
        .saturating_mul(1 << failures.saturating_sub(1).min(6))
        .min(Duration::from_secs(60))
        .min(left / 2);
    let jitter = rng.below(ceiling.as_millis() as u64 / 2 + 1);
    ceiling.saturating_sub(Duration::from_millis(jitter))
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
/// `credential_process`'s format). Errors say what is wrong with it (`has no AccessKeyId`)
/// and never quote a key, secret or token.
pub fn parse_json_credentials(
    body: &[u8],
    token_field: &str,
    provider: &'static str,
) -> Result<Credentials, String> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("is not JSON ({e})"))?;
    let field = |name: &str| {
        v.get(name)
            .and_then(serde_json::Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
    };
    let id = field("AccessKeyId").ok_or("has no AccessKeyId")?;
    let secret = field("SecretAccessKey").ok_or("has no SecretAccessKey")?;
    let token = field(token_field).map(String::from);
    let expiry = match field("Expiration") {
        None => None,
        Some(e) => Some(crate::clock::parse_rfc3339(e).ok_or_else(|| {
            format!(
                "has an unreadable Expiration {:?}",
                crate::log::one_line(e, 64)
            )
        })?),
    };
    Ok(Credentials::new(id, secret, token, expiry, provider))
}

/// Credentials that never change (from the environment or a profile's static keys).
pub struct Static(pub Credentials);

impl Provider for Static {
    fn credentials(&mut self, _now: SystemTime) -> Result<Credentials, Error> {
        Ok(self.0.clone())
    }
}

/// A provider whose fetches never outlive the stop deadline: fetching runs on a thread of its
/// own, and once the daemon is stopping the caller waits for it only until the deadline (a hung
/// STS endpoint or `credential_process` must not keep the sender from handing its batches
/// back). Credentials far from expiry are served from a copy here, without the thread; closer
/// to expiry the thread is asked (it refreshes ahead of time), but while the copy is still
/// valid the caller never waits for the answer: a slow refresh does not hold up delivery.
pub struct Bounded {
    requests: mpsc::Sender<Request>,
    answers: mpsc::Receiver<Result<Credentials, Error>>,
    stop: Arc<StopSignal>,
    /// A fetch was asked for and not answered yet.
    asked: bool,
    /// Answers still to come for requests made before the last invalidation, to be ignored.
    stale: usize,
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
            stale: 0,
            cached: None,
        })
    }

    /// The copy, if it is still valid at `now` for longer than `for_at_least`.
    fn copy(&self, now: SystemTime, for_at_least: Duration) -> Option<Credentials> {
        self.cached
            .as_ref()
            .filter(|c| {
                c.expiry()
                    .is_none_or(|e| e.duration_since(now).is_ok_and(|d| d > for_at_least))
            })
            .cloned()
    }

    /// Takes in an answer: ignored if stale, else it becomes the copy if it holds credentials.
    fn take(&mut self, answer: Result<Credentials, Error>) -> Option<Result<Credentials, Error>> {
        if self.stale > 0 {
            self.stale -= 1;
            return None;
        }
        self.asked = false;
        if let Ok(c) = &answer {
            self.cached = Some(c.clone());
        }
        Some(answer)
    }

    /// Waits for the answer to the fetch asked for, in slices, so that a stop that comes while
    /// waiting is seen.
    fn wait(&mut self) -> Result<Credentials, Error> {
        loop {
            let slice = self.stop.bound(WAIT_SLICE);
            match self.answers.recv_timeout(slice) {
                Ok(answer) => {
                    if let Some(answer) = self.take(answer) {
                        return answer;
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return Err(Error::Thread(None)),
                Err(mpsc::RecvTimeoutError::Timeout)
                    if self
                        .stop
                        .deadline()
                        .is_some_and(|d| std::time::Instant::now() >= d) =>
                {
                    return Err(Error::StopDeadline)
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
        }
    }
}

impl Provider for Bounded {
    fn credentials(&mut self, now: SystemTime) -> Result<Credentials, Error> {
        if let Some(c) = self.copy(now, SERVE_COPY_UNTIL) {
            return Ok(c);
        }
        if !self.asked {
            self.requests
                .send(Request::Get(now))
                .map_err(|_| Error::Thread(None))?;
            self.asked = true;
        }
        // Still valid: take an answer that is there already, else keep using the copy.
        if let Some(copy) = self.copy(now, EXPIRY_MARGIN) {
            loop {
                match self.answers.try_recv() {
                    Ok(answer) => match self.take(answer) {
                        Some(Ok(fresh)) => return Ok(fresh),
                        Some(Err(_)) => return Ok(copy),
                        None => {}
                    },
                    Err(mpsc::TryRecvError::Empty) => return Ok(copy),
                    Err(mpsc::TryRecvError::Disconnected) => return Err(Error::Thread(None)),
                }
            }
        }
        self.wait()
    }

    fn invalidate(&mut self) {
        self.cached = None;
        if self.asked {
            // The answer on its way may hold the credentials just found wanting.
            self.stale += 1;
            self.asked = false;
        }
        let _ = self.requests.send(Request::Invalidate);
    }
}

/// Reads `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN` through `env`.
/// Blank values count as unset. `Ok(None)` when neither key is set.
pub fn from_env(env: impl Fn(&str) -> Option<OsString>) -> Result<Option<Credentials>, Error> {
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
        (Some(_), None) => Err(Error::Variable {
            name: "AWS_SECRET_ACCESS_KEY",
            problem: "not set, but AWS_ACCESS_KEY_ID is".into(),
        }),
        (None, Some(_)) => Err(Error::Variable {
            name: "AWS_ACCESS_KEY_ID",
            problem: "not set, but AWS_SECRET_ACCESS_KEY is".into(),
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
        fn fetch(&mut self, now: SystemTime) -> Result<Credentials, Error> {
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

    /// Answers from a script: `Some(lifetime)` for credentials living that long, `None` for a
    /// failure.
    struct Scripted(Vec<Option<u64>>, u32);
    impl Fetch for Scripted {
        fn fetch(&mut self, now: SystemTime) -> Result<Credentials, Error> {
            self.1 += 1;
            match self.0.remove(0) {
                Some(secs) => Ok(Credentials::new(
                    format!("K{}", self.1),
                    "s",
                    Some("t".into()),
                    Some(now + Duration::from_secs(secs)),
                    "test",
                )),
                None => Err(Error::answer("test", "http://test/", "metadata blip")),
            }
        }
    }

    /// A refresh that failed at the refresh point threw the credentials in hand away, though
    /// they were valid for minutes more: delivery stalled until the source answered again.
    #[test]
    fn a_failed_refresh_keeps_using_credentials_until_they_expire() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let at = |s: f64| t0 + Duration::from_secs_f64(s);
        let key = |r: Result<Credentials, Error>| r.unwrap().access_key_id().to_string();
        let mut p = Refreshing::new(Scripted(vec![Some(60), None, None, None, Some(60)], 0));
        assert_eq!(key(p.credentials(at(0.0))), "K1");
        // Refreshed after 24 to 30 s; the fetch fails, the credentials in hand are kept.
        assert_eq!(
            key(p.credentials(at(30.0))),
            "K1",
            "kept after a failed refresh"
        );
        assert_eq!(p.fetch.1, 2);
        // The next attempt comes after a backoff (at most 1 s), not at every call.
        assert_eq!(key(p.credentials(at(30.4))), "K1");
        assert_eq!(p.fetch.1, 2, "no attempt during the backoff");
        assert_eq!(key(p.credentials(at(31.0))), "K1");
        assert_eq!(p.fetch.1, 3);
        // Within the last 10 s they are no longer handed out: a failure is the caller's.
        let e = p.credentials(at(50.5)).unwrap_err();
        assert_eq!(e.to_string(), "test at http://test/: metadata blip");
        assert_eq!(key(p.credentials(at(51.0))), "K5");
        assert_eq!(key(p.credentials(at(52.0))), "K5", "cached again");
    }

    #[test]
    fn refresh_retries_back_off_within_what_is_left() {
        let mut rng = Rng::with_seed(11);
        let hour = Duration::from_secs(3600);
        for (failures, most) in [(1, 1), (2, 2), (3, 4), (7, 60), (30, 60)] {
            for _ in 0..50 {
                let w = retry_refresh_in(failures, hour, &mut rng);
                let most = Duration::from_secs(most);
                assert!(w <= most && w >= most / 2, "{failures}: {w:?}");
            }
        }
        let w = retry_refresh_in(9, Duration::from_secs(12), &mut rng);
        assert!(w <= Duration::from_secs(6), "half of what is left: {w:?}");
    }

    /// Blocks its second answer until told to go on.
    struct SlowSecond {
        calls: u32,
        go_on: mpsc::Receiver<()>,
    }
    impl Provider for SlowSecond {
        fn credentials(&mut self, now: SystemTime) -> Result<Credentials, Error> {
            self.calls += 1;
            if self.calls == 2 {
                let _ = self.go_on.recv();
            }
            let exp = now + Duration::from_secs(240);
            Ok(Credentials::new(
                format!("K{}", self.calls),
                "s",
                None,
                Some(exp),
                "test",
            ))
        }
    }

    /// A refresh that took long (a slow metadata service, STS, a credential_process) held up
    /// the sender while the credentials it had were still valid.
    #[test]
    fn a_slow_refresh_does_not_hold_up_credentials_that_are_still_valid() {
        let (go_on, wait) = mpsc::channel();
        let inner = SlowSecond {
            calls: 0,
            go_on: wait,
        };
        let mut b = Bounded::new(Box::new(inner), Arc::new(StopSignal::default())).unwrap();
        let t0 = SystemTime::now();
        assert_eq!(b.credentials(t0).unwrap().access_key_id(), "K1");
        let (done, result) = mpsc::channel();
        let asker = std::thread::spawn(move || {
            let c = b.credentials(t0 + Duration::from_secs(1));
            let _ = done.send(c.map(|c| c.access_key_id().to_string()));
            b
        });
        let answer = result.recv_timeout(Duration::from_secs(5));
        go_on.send(()).unwrap();
        assert_eq!(
            answer
                .expect("the copy without waiting for the refresh")
                .unwrap(),
            "K1"
        );
        let mut b = asker.join().unwrap();
        // The refresh's answer is taken once it is there.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let k = b.credentials(t0 + Duration::from_secs(2)).unwrap();
            if k.access_key_id() == "K2" {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "the refresh's answer");
            std::thread::sleep(Duration::from_millis(5));
        }
        // After an invalidation, what was on its way is not taken for fresh.
        b.invalidate();
        let k = b.credentials(t0 + Duration::from_secs(3)).unwrap();
        assert_ne!(k.access_key_id(), "K2");
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
