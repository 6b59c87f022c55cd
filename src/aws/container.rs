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

use super::credentials::{parse_json_credentials, Credentials, Fetch};
use super::env::Env;
use super::http::{loggable_url, request_error, HttpSettings};
use super::Error;

const ECS_HOST: &str = "http://169.254.170.2";
const ATTEMPTS: usize = 3;
const SERVICE: &str = "container credentials";

/// The container credentials endpoint.
pub struct ContainerCredentials {
    url: String,
    /// `url` as it may be logged ([`loggable_url`]).
    shown_url: String,
    token_file: Option<PathBuf>,
    token: Option<String>,
    agent: Agent,
}

impl ContainerCredentials {
    /// The endpoint the environment names: `Ok(None)` if none, `Err` if the URL is not allowed.
    pub fn from_env(env: &Env, http: &HttpSettings) -> Result<Option<ContainerCredentials>, Error> {
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
            shown_url: loggable_url(&url),
            url,
            token_file: env
                .get("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE")
                .map(PathBuf::from),
            token: env
                .get("AWS_CONTAINER_AUTHORIZATION_TOKEN")
                .map(String::from),
            agent: http.metadata_agent(Duration::from_secs(2), Duration::from_secs(2)),
        }))
    }

    /// The URL asked, as it may be logged: without user-info, query or fragment.
    pub fn shown_url(&self) -> &str {
        &self.shown_url
    }

    fn authorization(&self) -> Result<Option<String>, Error> {
        let (name, value) = match &self.token_file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| Error::File {
                    what: "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
                    path: path.clone(),
                    source,
                })?;
                (
                    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
                    Some(text.trim().to_string()),
                )
            }
            None => ("AWS_CONTAINER_AUTHORIZATION_TOKEN", self.token.clone()),
        };
        match value {
            Some(v) if v.contains(['\r', '\n']) => Err(Error::Variable {
                name,
                problem: "the authorization token contains a line break".into(),
            }),
            other => Ok(other),
        }
    }

    fn fetch_once(&self) -> Result<Credentials, Error> {
        let mut req = self.agent.get(&self.url);
        if let Some(auth) = self.authorization()? {
            req = req.header("authorization", auth);
        }
        let failed = |e| request_error(SERVICE, &self.shown_url, e);
        let mut resp = req.call().map_err(failed)?;
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .with_config()
            .limit(64 * 1024)
            .read_to_vec()
            .map_err(failed)?;
        if status != 200 {
            return Err(Error::answer(
                SERVICE,
                &self.shown_url,
                format!("answered HTTP {status}"),
            ));
        }
        parse_json_credentials(&body, "Token", "container")
            .map_err(|e| Error::answer(SERVICE, &self.shown_url, format!("the answer {e}")))
    }
}

impl Fetch for ContainerCredentials {
    fn fetch(&mut self, _now: SystemTime) -> Result<Credentials, Error> {
        let mut attempt = 1;
        loop {
            match self.fetch_once() {
                Ok(c) => return Ok(c),
                Err(e) if attempt >= ATTEMPTS || e.is_configuration() => return Err(e),
                Err(_) => attempt += 1,
            }
        }
    }
}

/// Whether a full URI may be used: any https URL, or http to a loopback or the ECS/EKS hosts.
pub fn check_full_uri(uri: &str) -> Result<(), Error> {
    if uri.starts_with("https://") {
        return Ok(());
    }
    let refuse = || {
        Err(Error::Variable {
            name: "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            problem: format!(
                "{:?} is not https and not a loopback or container host",
                loggable_url(uri)
            ),
        })
    };
    if !uri.starts_with("http://") {
        return refuse();
    }
    // The host the request goes to, as ureq will read it: after any user-info.
    let Ok(parsed) = uri.parse::<ureq::http::Uri>() else {
        return refuse();
    };
    let host = parsed.host().unwrap_or("");
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
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
    fn loggable_urls_keep_scheme_host_port_and_path_only() {
        for (url, shown) in [
            (
                "https://user:pass@host:8443/path?token=x#f",
                "https://host:8443/path",
            ),
            (
                "http://127.0.0.1:9/creds?sig=s3cret",
                "http://127.0.0.1:9/creds",
            ),
            (
                "http://169.254.170.2/v2/credentials/abc",
                "http://169.254.170.2/v2/credentials/abc",
            ),
            (
                "http://[fd00:ec2::23]/v1/credentials",
                "http://[fd00:ec2::23]/v1/credentials",
            ),
            ("http://token@localhost/", "http://localhost/"),
            ("https://host#frag", "https://host/"),
            ("ftp://u:p@example.com/x?y", "ftp://example.com/x"),
        ] {
            assert_eq!(loggable_url(url), shown, "{url}");
        }
        for unparseable in [
            "no scheme?secret",
            "http://u:p?q@host/",
            "http://a b/?secret",
            "",
        ] {
            let shown = loggable_url(unparseable);
            assert!(
                !shown.contains("secret") && !shown.contains("p?q"),
                "{shown}"
            );
        }
        let e = check_full_uri("http://user:pw@10.0.0.1/creds?token=tok")
            .unwrap_err()
            .to_string();
        assert!(
            !e.contains("pw") && !e.contains("tok") && e.contains("10.0.0.1"),
            "{e}"
        );
    }

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
            "http://user:pw@127.0.0.1:9/creds?token=t",
        ] {
            assert!(check_full_uri(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://10.0.0.1/creds",
            "http://example.com/",
            "ftp://127.0.0.1/",
            "http://169.254.169.254/",
            "http://127.0.0.1:80@example.com/creds",
        ] {
            assert!(check_full_uri(bad).is_err(), "{bad}");
        }
    }
}
