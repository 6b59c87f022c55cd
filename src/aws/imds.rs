//! EC2 instance metadata (IMDSv2, else IMDSv1): the instance role's credentials and the region.
//!
//! A session token comes first (`PUT /latest/api/token`), then the role name
//! (`GET /latest/meta-data/iam/security-credentials/`) and its credentials. A token request
//! answered 403 or 404 means the service does not hand out tokens; as in the AWS SDKs, requests
//! then go without one (IMDSv1), unless `AWS_EC2_METADATA_V1_DISABLED` is true. The base URL is
//! `http://169.254.169.254`, or `AWS_EC2_METADATA_SERVICE_ENDPOINT`;
//! `AWS_EC2_METADATA_DISABLED=true` turns the service off. Connections time out after 1 s and
//! requests after 2 s; they go straight to the link-local address (no proxy), and are tried
//! twice.
//!
//! Errors tell a service that was never reached ([`Error::Unreachable`]: not an EC2 instance)
//! from one that answered but failed (any other: it may answer later).

use std::time::{Duration, SystemTime};

use ureq::Agent;

use super::credentials::{parse_json_credentials, Credentials, Fetch};
use super::env::Env;
use super::http::{loggable_url, request_error, HttpSettings};
use super::Error;

/// The default metadata address.
pub const DEFAULT_ENDPOINT: &str = "http://169.254.169.254";
const TOKEN_TTL_SECONDS: &str = "21600";
const ATTEMPTS: usize = 2;
const SERVICE: &str = "EC2 instance metadata";

/// A client for the instance metadata service.
#[derive(Clone)]
pub struct Imds {
    base: String,
    /// `base` as it may be logged.
    shown: String,
    agent: Agent,
    v1_disabled: bool,
}

/// How long a connection to the service may take, and a whole request. The unit tests, many
/// at once on a shared machine, allow more: they check what an answer means, and a loaded
/// machine made a 503 there look like a service that was never reached (1 run in about 200).
#[cfg(not(test))]
const TIMEOUTS: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(2));
#[cfg(test)]
const TIMEOUTS: (Duration, Duration) = (Duration::from_secs(10), Duration::from_secs(20));

impl Imds {
    /// The client the environment asks for, or `None` if `AWS_EC2_METADATA_DISABLED` is true.
    pub fn from_env(env: &Env, http: &HttpSettings) -> Option<Imds> {
        if env.is_true("AWS_EC2_METADATA_DISABLED") {
            return None;
        }
        let base = env
            .get("AWS_EC2_METADATA_SERVICE_ENDPOINT")
            .unwrap_or(DEFAULT_ENDPOINT)
            .trim_end_matches('/')
            .to_string();
        Some(Imds {
            shown: loggable_url(&base).trim_end_matches('/').to_string(),
            base,
            agent: http.metadata_agent(TIMEOUTS.0, TIMEOUTS.1),
            v1_disabled: env.is_true("AWS_EC2_METADATA_V1_DISABLED"),
        })
    }

    /// Where it is reached, as it may be logged.
    pub fn endpoint(&self) -> &str {
        &self.shown
    }

    /// `base` + `path`, and what of it may be logged.
    fn url(&self, path: &str) -> (String, String) {
        (
            format!("{}{path}", self.base),
            format!("{}{path}", self.shown),
        )
    }

    /// A session token, or `None` where the service hands out none and IMDSv1 may be used.
    fn token(&self) -> Result<Option<String>, Error> {
        let (url, shown) = self.url("/latest/api/token");
        let failed = |e| request_error(SERVICE, &shown, e);
        let mut resp = self
            .agent
            .put(&url)
            .header("x-aws-ec2-metadata-token-ttl-seconds", TOKEN_TTL_SECONDS)
            .send_empty()
            .map_err(failed)?;
        match resp.status().as_u16() {
            200 => Ok(Some(
                resp.body_mut()
                    .with_config()
                    .limit(4096)
                    .read_to_string()
                    .map_err(failed)?,
            )),
            s @ (403 | 404) if self.v1_disabled => Err(Error::answer(
                SERVICE,
                &shown,
                format!("answered HTTP {s}, and AWS_EC2_METADATA_V1_DISABLED forbids going without a token"),
            )),
            403 | 404 => Ok(None),
            s => Err(Error::answer(SERVICE, &shown, format!("answered HTTP {s}"))),
        }
    }

    fn get(&self, path: &str, token: Option<&str>) -> Result<String, Error> {
        let (url, shown) = self.url(path);
        let failed = |e| request_error(SERVICE, &shown, e);
        let mut req = self.agent.get(&url);
        if let Some(token) = token {
            req = req.header("x-aws-ec2-metadata-token", token);
        }
        let mut resp = req.call().map_err(failed)?;
        match resp.status().as_u16() {
            200 => resp
                .body_mut()
                .with_config()
                .limit(64 * 1024)
                .read_to_string()
                .map_err(failed),
            404 if path.ends_with("security-credentials/") => Err(Error::answer(
                SERVICE,
                &shown,
                "no role attached (HTTP 404)",
            )),
            s => Err(Error::answer(SERVICE, &shown, format!("answered HTTP {s}"))),
        }
    }

    /// Tries `f` twice; the error of an attempt that reached the service wins over one that
    /// did not.
    fn with_retry<T>(&self, f: impl Fn() -> Result<T, Error>) -> Result<T, Error> {
        let mut error = None;
        for _ in 0..ATTEMPTS {
            match f() {
                Ok(v) => return Ok(v),
                Err(e @ Error::Unreachable { .. }) if error.is_some() => drop(e),
                Err(e) => error = Some(e),
            }
        }
        Err(error.expect("an attempt was made"))
    }

    /// The name of the role attached to the instance.
    pub fn role_name(&self) -> Result<String, Error> {
        const PATH: &str = "/latest/meta-data/iam/security-credentials/";
        self.with_retry(|| {
            let token = self.token()?;
            let names = self.get(PATH, token.as_deref())?;
            let url = || self.url(PATH).1;
            match names.lines().map(str::trim).find(|l| !l.is_empty()) {
                None => Err(Error::answer(SERVICE, &url(), "no role attached")),
                Some(name) if is_role_name(name) => Ok(name.to_string()),
                Some(_) => Err(Error::answer(
                    SERVICE,
                    &url(),
                    "answered something that is not a role name",
                )),
            }
        })
    }

    /// The instance role's current credentials.
    pub fn role_credentials(&self, role: &str) -> Result<Credentials, Error> {
        let path = format!("/latest/meta-data/iam/security-credentials/{role}");
        let url = self.url(&path).1;
        self.with_retry(|| {
            let token = self.token()?;
            let body = self.get(&path, token.as_deref())?;
            let unusable = |problem: String| Error::answer(SERVICE, &url, problem);
            let v: serde_json::Value = serde_json::from_str(&body)
                .map_err(|e| unusable(format!("the answer is not JSON ({e})")))?;
            match v.get("Code").and_then(|c| c.as_str()) {
                None | Some("Success") => parse_json_credentials(body.as_bytes(), "Token", "imds")
                    .map_err(|e| unusable(format!("the answer {e}"))),
                Some(code) => Err(unusable(format!(
                    "credentials not available: {}",
                    crate::log::one_line(code, 100)
                ))),
            }
        })
    }

    /// The instance's region.
    pub fn region(&self) -> Result<String, Error> {
        const PATH: &str = "/latest/meta-data/placement/region";
        self.with_retry(|| {
            let token = self.token()?;
            let region = self.get(PATH, token.as_deref())?;
            match region.trim() {
                r if is_region(r) => Ok(r.to_string()),
                _ => Err(Error::answer(
                    SERVICE,
                    &self.url(PATH).1,
                    "answered something that is not a region",
                )),
            }
        })
    }
}

/// Whether `name` can be an IAM role name (1 to 64 of `A-Za-z0-9+=,.@_-`), and so be put in
/// a URL path and a log line as it is.
fn is_role_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b))
}

/// Whether `name` can be a region (`us-east-1`, `cn-north-1`…): 1 to 32 of `a-z0-9-`, put
/// into endpoint names and log lines as it is.
fn is_region(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// The instance role's credentials, looked up at every fetch.
pub struct ImdsCredentials {
    imds: Imds,
}

impl ImdsCredentials {
    /// Credentials of the role attached to the instance.
    pub fn new(imds: Imds) -> Self {
        ImdsCredentials { imds }
    }
}

impl Fetch for ImdsCredentials {
    fn fetch(&mut self, _now: SystemTime) -> Result<Credentials, Error> {
        let role = self.imds.role_name()?;
        self.imds.role_credentials(&role)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names_and_regions_are_used_only_if_they_look_like_them() {
        for ok in ["test-role", "a", "Role_1+=,.@-", &"r".repeat(64)] {
            assert!(is_role_name(ok), "{ok}");
        }
        for bad in [
            "",
            "../x",
            "a b",
            "a/b",
            "r\u{e9}le",
            &"r".repeat(65),
            "a%2f",
        ] {
            assert!(!is_role_name(bad), "{bad}");
        }
        assert!(is_region("eu-central-1") && is_region("cn-north-1"));
        for bad in ["", "us-east-1.evil.com", "US-EAST-1", "a/b", "x\ny"] {
            assert!(!is_region(bad), "{bad}");
        }
    }
}
