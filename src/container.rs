//! Container credentials: the ECS task role endpoint and EKS Pod Identity.
//!
//! `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` is appended to `http://169.254.170.2`; else
//! `AWS_CONTAINER_CREDENTIALS_FULL_URI` is used if it is https, or http to a loopback address,
//! 169.254.170.2, 169.254.170.23 or fd00:ec2::23. The `Authorization` header comes from the file
//! in `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE` (read at every fetch; it wins) or from
//! `AWS_CONTAINER_AUTHORIZATION_TOKEN`; a value with CR or LF is refused. Requests time out
//! after 2 s and are tried three times.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use ureq::Agent;

use crate::credentials::{parse_json_credentials, Credentials, CredentialsError, Fetch};
use crate::env::Env;
use crate::http::HttpSettings;

const ECS_HOST: &str = "http://169.254.170.2";
const ATTEMPTS: usize = 3;

/// The container credentials endpoint.
pub struct ContainerCredentials {
    url: String,
    token_file: Option<PathBuf>,
    token: Option<String>,
    agent: Agent,
}

impl ContainerCredentials {
    /// The endpoint the environment names: `Ok(None)` if none, `Err` if the URL is not allowed.
    pub fn from_env(
        env: &Env,
        http: &HttpSettings,
    ) -> Result<Option<ContainerCredentials>, String> {
        let url = if let Some(rel) = env.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") {
            let sep = if rel.starts_with('/') { "" } else { "/" };
            format!("{ECS_HOST}{sep}{rel}")
        } else if let Some(full) = env.get("AWS_CONTAINER_CREDENTIALS_FULL_URI") {
            check_full_uri(full)?;
            full.to_string()
        } else {
            return Ok(None);
        };
        Ok(Some(ContainerCredentials {
            url,
            token_file: env
                .get("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE")
                .map(PathBuf::from),
            token: env
                .get("AWS_CONTAINER_AUTHORIZATION_TOKEN")
                .map(String::from),
            agent: http.metadata_agent(Duration::from_secs(2)),
        }))
    }

    /// The URL asked.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn authorization(&self) -> Result<Option<String>, String> {
        let value = match &self.token_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| {
                        format!(
                            "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE {}: {e}",
                            path.display()
                        )
                    })?
                    .trim()
                    .to_string(),
            ),
            None => self.token.clone(),
        };
        match value {
            Some(v) if v.contains(['\r', '\n']) => {
                Err("the container authorization token contains a line break".into())
            }
            other => Ok(other),
        }
    }

    fn fetch_once(&self) -> Result<Credentials, String> {
        let mut req = self.agent.get(&self.url);
        if let Some(auth) = self.authorization()? {
            req = req.header("authorization", auth);
        }
        let mut resp = req.call().map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .with_config()
            .limit(64 * 1024)
            .read_to_vec()
            .map_err(|e| e.to_string())?;
        if status != 200 {
            return Err(format!("{} answered HTTP {status}", self.url));
        }
        parse_json_credentials(&body, "Token", "container")
    }
}

impl Fetch for ContainerCredentials {
    fn fetch(&mut self, _now: SystemTime) -> Result<Credentials, CredentialsError> {
        let mut last = String::new();
        for _ in 0..ATTEMPTS {
            match self.fetch_once() {
                Ok(c) => return Ok(c),
                Err(e) => last = e,
            }
        }
        Err(CredentialsError::new("container credentials", last))
    }
}

/// Whether a full URI may be used: any https URL, or http to a loopback or the ECS/EKS hosts.
pub fn check_full_uri(uri: &str) -> Result<(), String> {
    if uri.starts_with("https://") {
        return Ok(());
    }
    let refuse = || {
        Err(format!("AWS_CONTAINER_CREDENTIALS_FULL_URI {uri:?} is not https and not a loopback or container host"))
    };
    let Some(rest) = uri.strip_prefix("http://") else {
        return refuse();
    };
    let authority = rest.split('/').next().unwrap_or("");
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    if host == "localhost" {
        return Ok(());
    }
    match host.parse::<IpAddr>() {
        Ok(ip) if ip.is_loopback() => Ok(()),
        Ok(ip)
            if ["169.254.170.2", "169.254.170.23", "fd00:ec2::23"]
                .iter()
                .any(|a| a.parse::<IpAddr>().ok() == Some(ip)) =>
        {
            Ok(())
        }
        _ => refuse(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_full_uris() {
        for ok in [
            "https://example.com/creds",
            "http://127.0.0.1:8080/creds",
            "http://127.1.2.3/creds",
            "http://localhost:9/x",
            "http://[::1]:80/x",
            "http://169.254.170.2/v2/credentials",
            "http://169.254.170.23/v1/credentials",
            "http://[fd00:ec2::23]/v1/credentials",
        ] {
            assert_eq!(check_full_uri(ok), Ok(()), "{ok}");
        }
        for bad in [
            "http://10.0.0.1/creds",
            "http://example.com/",
            "ftp://127.0.0.1/",
            "http://169.254.169.254/",
        ] {
            assert!(check_full_uri(bad).is_err(), "{bad}");
        }
    }
}
