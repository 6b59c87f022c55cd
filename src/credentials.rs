//! Where the sender gets AWS credentials from.
//!
//! A [`Provider`] hands out credentials when asked and may cache and refresh them; the sender
//! thread asks before every request and calls [`Provider::invalidate`] when the service says
//! they expired. Credential work therefore never runs on the poll loop. Credentials are held in
//! `aws_credential_types::Credentials`, whose `Debug` output redacts the secret parts; nothing
//! here logs a key, secret or token.

use std::ffi::OsString;
use std::fmt;
use std::time::SystemTime;

pub use aws_credential_types::Credentials;

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

/// A source of credentials for the sender.
pub trait Provider: Send {
    /// Credentials valid at `now`, from cache or freshly fetched.
    fn credentials(&mut self, now: SystemTime) -> Result<Credentials, CredentialsError>;
    /// Forgets cached credentials, so the next call fetches new ones.
    fn invalidate(&mut self) {}
}

/// Credentials that never change (from the environment).
pub struct Static(pub Credentials);

impl Provider for Static {
    fn credentials(&mut self, _now: SystemTime) -> Result<Credentials, CredentialsError> {
        Ok(self.0.clone())
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
