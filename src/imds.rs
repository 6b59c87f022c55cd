//! EC2 instance metadata (IMDSv2): the instance role's credentials and the region.
//!
//! A session token comes first (`PUT /latest/api/token`), then the role name
//! (`GET /latest/meta-data/iam/security-credentials/`) and its credentials. The base URL is
//! `http://169.254.169.254`, or `AWS_EC2_METADATA_SERVICE_ENDPOINT`;
//! `AWS_EC2_METADATA_DISABLED=true` turns the service off. Requests time out after 1 s, go
//! straight to the link-local address (no proxy), and are tried twice.

use std::time::{Duration, SystemTime};

use ureq::Agent;

use crate::credentials::{parse_json_credentials, Credentials, CredentialsError, Fetch};
use crate::env::Env;
use crate::http::HttpSettings;

/// The default metadata address.
pub const DEFAULT_ENDPOINT: &str = "http://169.254.169.254";
const TOKEN_TTL_SECONDS: &str = "21600";
const ATTEMPTS: usize = 2;

/// A client for the instance metadata service.
#[derive(Clone)]
pub struct Imds {
    base: String,
    agent: Agent,
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
            agent: http.metadata_agent(Duration::from_secs(1)),
        })
    }

    /// Where it is reached.
    pub fn endpoint(&self) -> &str {
        &self.base
    }

    fn token(&self) -> Result<String, String> {
        let url = format!("{}/latest/api/token", self.base);
        let mut resp = self
            .agent
            .put(&url)
            .header("x-aws-ec2-metadata-token-ttl-seconds", TOKEN_TTL_SECONDS)
            .send_empty()
            .map_err(|e| e.to_string())?;
        match resp.status().as_u16() {
            200 => resp.body_mut().read_to_string().map_err(|e| e.to_string()),
            403 => Err(
                "the metadata service refused a token (IMDS may be disabled on this instance)"
                    .into(),
            ),
            s => Err(format!("token request answered HTTP {s}")),
        }
    }

    fn get(&self, path: &str, token: &str) -> Result<String, String> {
        let url = format!("{}{path}", self.base);
        let mut resp = self
            .agent
            .get(&url)
            .header("x-aws-ec2-metadata-token", token)
            .call()
            .map_err(|e| e.to_string())?;
        match resp.status().as_u16() {
            200 => resp
                .body_mut()
                .with_config()
                .limit(64 * 1024)
                .read_to_string()
                .map_err(|e| e.to_string()),
            404 if path.ends_with("security-credentials/") => Err("no role attached".into()),
            s => Err(format!("{path} answered HTTP {s}")),
        }
    }

    fn with_retry<T>(&self, f: impl Fn() -> Result<T, String>) -> Result<T, String> {
        let mut last = String::new();
        for _ in 0..ATTEMPTS {
            match f() {
                Ok(v) => return Ok(v),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// The name of the role attached to the instance.
    pub fn role_name(&self) -> Result<String, String> {
        self.with_retry(|| {
            let token = self.token()?;
            let names = self.get("/latest/meta-data/iam/security-credentials/", &token)?;
            names
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty())
                .map(String::from)
                .ok_or_else(|| "no role attached".to_string())
        })
    }

    /// The instance role's current credentials.
    pub fn role_credentials(&self, role: &str) -> Result<Credentials, String> {
        self.with_retry(|| {
            let token = self.token()?;
            let body = self.get(
                &format!("/latest/meta-data/iam/security-credentials/{role}"),
                &token,
            )?;
            let v: serde_json::Value =
                serde_json::from_str(&body).map_err(|e| format!("the answer is not JSON ({e})"))?;
            match v.get("Code").and_then(|c| c.as_str()) {
                None | Some("Success") => parse_json_credentials(body.as_bytes(), "Token", "imds"),
                Some(code) => Err(format!("credentials not available: {code}")),
            }
        })
    }

    /// The instance's region.
    pub fn region(&self) -> Result<String, String> {
        self.with_retry(|| {
            let token = self.token()?;
            Ok(self
                .get("/latest/meta-data/placement/region", &token)?
                .trim()
                .to_string())
        })
    }
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
        let err = |m: String| CredentialsError::new("IMDS", m);
        let role = self.imds.role_name().map_err(err)?;
        self.imds.role_credentials(&role).map_err(err)
    }
}
