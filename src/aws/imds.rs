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
//! Errors tell a service that was never reached ([`ImdsError::Unreachable`]: not an EC2
//! instance) from one that answered but failed ([`ImdsError::Failed`]: it may answer later).

use std::fmt;
use std::time::{Duration, SystemTime};

use ureq::Agent;

use super::credentials::{parse_json_credentials, Credentials, CredentialsError, Fetch};
use super::env::Env;
use super::http::{never_connected, HttpSettings};

/// The default metadata address.
pub const DEFAULT_ENDPOINT: &str = "http://169.254.169.254";
const TOKEN_TTL_SECONDS: &str = "21600";
const ATTEMPTS: usize = 2;

/// Why the metadata service gave nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImdsError {
    /// No connection could be made: nothing listens there, or nothing answered in time.
    Unreachable(String),
    /// The service was reached but refused or failed; it may answer later.
    Failed(String),
}

impl fmt::Display for ImdsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImdsError::Unreachable(m) | ImdsError::Failed(m) => f.write_str(m),
        }
    }
}

impl From<String> for ImdsError {
    fn from(m: String) -> Self {
        ImdsError::Failed(m)
    }
}

impl From<&str> for ImdsError {
    fn from(m: &str) -> Self {
        ImdsError::Failed(m.into())
    }
}

fn request_error(e: ureq::Error) -> ImdsError {
    if never_connected(&e) {
        ImdsError::Unreachable(e.to_string())
    } else {
        ImdsError::Failed(e.to_string())
    }
}

/// A client for the instance metadata service.
#[derive(Clone)]
pub struct Imds {
    base: String,
    agent: Agent,
    v1_disabled: bool,
}

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
            base,
            agent: http.metadata_agent(Duration::from_secs(1), Duration::from_secs(2)),
            v1_disabled: env.is_true("AWS_EC2_METADATA_V1_DISABLED"),
        })
    }

    /// Where it is reached.
    pub fn endpoint(&self) -> &str {
        &self.base
    }

    /// A session token, or `None` where the service hands out none and IMDSv1 may be used.
    fn token(&self) -> Result<Option<String>, ImdsError> {
        let url = format!("{}/latest/api/token", self.base);
        let mut resp = self
            .agent
            .put(&url)
            .header("x-aws-ec2-metadata-token-ttl-seconds", TOKEN_TTL_SECONDS)
            .send_empty()
            .map_err(request_error)?;
        match resp.status().as_u16() {
            200 => Ok(Some(
                resp.body_mut()
                    .with_config()
                    .limit(4096)
                    .read_to_string()
                    .map_err(|e| e.to_string())?,
            )),
            s @ (403 | 404) if self.v1_disabled => Err(format!(
                "the token request answered HTTP {s}, and AWS_EC2_METADATA_V1_DISABLED forbids going without one"
            )
            .into()),
            403 | 404 => Ok(None),
            s => Err(format!("the token request answered HTTP {s}").into()),
        }
    }

    fn get(&self, path: &str, token: Option<&str>) -> Result<String, ImdsError> {
        let url = format!("{}{path}", self.base);
        let mut req = self.agent.get(&url);
        if let Some(token) = token {
            req = req.header("x-aws-ec2-metadata-token", token);
        }
        let mut resp = req.call().map_err(request_error)?;
        match resp.status().as_u16() {
            200 => Ok(resp
                .body_mut()
                .with_config()
                .limit(64 * 1024)
                .read_to_string()
                .map_err(|e| e.to_string())?),
            404 if path.ends_with("security-credentials/") => Err("no role attached".into()),
            s => Err(format!("{path} answered HTTP {s}").into()),
        }
    }

    /// Tries `f` twice; the service counts as reached if either attempt reached it.
    fn with_retry<T>(&self, f: impl Fn() -> Result<T, ImdsError>) -> Result<T, ImdsError> {
        let mut failed = None;
        let mut last = ImdsError::Unreachable(String::new());
        for _ in 0..ATTEMPTS {
            match f() {
                Ok(v) => return Ok(v),
                Err(e @ ImdsError::Failed(_)) => failed = Some(e),
                Err(e) => last = e,
            }
        }
        Err(failed.unwrap_or(last))
    }

    /// The name of the role attached to the instance.
    pub fn role_name(&self) -> Result<String, ImdsError> {
        self.with_retry(|| {
            let token = self.token()?;
            let names = self.get(
                "/latest/meta-data/iam/security-credentials/",
                token.as_deref(),
            )?;
            match names.lines().map(str::trim).find(|l| !l.is_empty()) {
                None => Err("no role attached".into()),
                Some(name) if is_role_name(name) => Ok(name.to_string()),
                Some(_) => Err("the role name it gave is not a role name".into()),
            }
        })
    }

    /// The instance role's current credentials.
    pub fn role_credentials(&self, role: &str) -> Result<Credentials, ImdsError> {
        self.with_retry(|| {
            let token = self.token()?;
            let body = self.get(
                &format!("/latest/meta-data/iam/security-credentials/{role}"),
                token.as_deref(),
            )?;
            let v: serde_json::Value =
                serde_json::from_str(&body).map_err(|e| format!("the answer is not JSON ({e})"))?;
            match v.get("Code").and_then(|c| c.as_str()) {
                None | Some("Success") => {
                    Ok(parse_json_credentials(body.as_bytes(), "Token", "imds")?)
                }
                Some(code) => Err(format!(
                    "credentials not available: {}",
                    crate::kinesis::one_line(code, 100)
                )
                .into()),
            }
        })
    }

    /// The instance's region.
    pub fn region(&self) -> Result<String, ImdsError> {
        self.with_retry(|| {
            let token = self.token()?;
            Ok(self
                .get("/latest/meta-data/placement/region", token.as_deref())?
                .trim()
                .to_string())
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
    fn fetch(&mut self, _now: SystemTime) -> Result<Credentials, CredentialsError> {
        let err = |e: ImdsError| CredentialsError::new("IMDS", e.to_string());
        let role = self.imds.role_name().map_err(err)?;
        self.imds.role_credentials(&role).map_err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names_go_into_urls_and_logs_only_if_they_are_role_names() {
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
    }
}
