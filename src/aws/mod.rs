//! AWS without an AWS SDK: where credentials come from, how they are kept fresh, and how
//! requests are signed.
//!
//! [`resolve`] is the one entry point: from the Kinesis settings and the environment it finds
//! the region, the Kinesis endpoint and the source of credentials (the AWS CLI's default chain),
//! and returns them as [`Aws`]. Its [`Provider`] fetches and refreshes credentials on a thread
//! of its own, never outlives the stop deadline, and keeps using credentials that are still
//! valid while a refresh fails; [`sign_hashed`] signs a request with what it hands out.
//! Everything that can go wrong is an [`Error`], and [`Error::is_configuration`] tells
//! configuration that is wrong (start-up ends with exit status 2) from a source that fails for
//! now (retried). No key, secret, token or signature, nor the parts of a URL that may hold one,
//! ever goes into an error or the log.
//!
//! Inside: `chain` (the default chain, run once at start-up), `profile` and `ini` (the shared
//! files), `env` (the environment, read once), `imds`, `container`, `process` and `sts` (the
//! sources that fetch), `credentials` (caching, refreshing, the fetching thread), `sigv4`, and
//! `http` (the HTTP clients: TLS trust, proxies, timeouts).

mod chain;
mod container;
mod credentials;
mod endpoint;
mod env;
mod http;
mod imds;
mod ini;
mod process;
mod profile;
mod sigv4;
mod sts;
mod tls;

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use crate::options::KinesisConfig;
use crate::stop::StopSignal;

pub use credentials::{Credentials, Provider};
pub use env::Env;
pub use http::{loggable_url, HttpSettings};
pub use process::kill_running as kill_credential_processes;
pub use sigv4::{sha256_hex, sign, sign_hashed, BodyHash};
/// STS's percent-encoding, for the tests' own AWS client.
#[doc(hidden)]
pub use sts::percent_encode;

/// Everything needed to talk to Kinesis.
pub struct Aws {
    /// The region.
    pub region: String,
    /// The Kinesis endpoint URL.
    pub endpoint: String,
    /// Credentials, fetched and refreshed on a thread of their own.
    pub credentials: Box<dyn Provider>,
    /// TLS trust and proxies.
    pub http: HttpSettings,
    /// One line saying where credentials come from, for the log.
    pub credentials_source: String,
}

/// Resolves region, endpoint and credentials for `k` from `env` and the shared files. Fetches
/// of credentials give up at `stop`'s deadline.
pub fn resolve(k: &KinesisConfig, env: &Env, stop: &Arc<StopSignal>) -> Result<Aws, Error> {
    let found = chain::resolve(k, env)?;
    let credentials = credentials::Bounded::new(found.credentials, Arc::clone(stop))
        .map_err(|e| Error::Thread(Some(e)))?;
    Ok(Aws {
        credentials: Box::new(credentials),
        ..found
    })
}

/// Why AWS credentials, a region or a signature could not be had.
#[derive(Debug)]
pub enum Error {
    /// A file could not be read: a shared config or credentials file, the CA bundle, a token
    /// file.
    File {
        /// What the file is (`config file`, `--ca-bundle`, …).
        what: &'static str,
        /// Where it is.
        path: PathBuf,
        /// Why it could not be read.
        source: io::Error,
    },
    /// The CA bundle holds nothing usable.
    CaBundle {
        /// The bundle.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// A profile in the shared files cannot be used as written, or is not there.
    Profile {
        /// The profile.
        profile: String,
        /// The file or files it was looked up in.
        files: String,
        /// What is wrong.
        problem: String,
    },
    /// Something a profile names cannot be used (its credential_source's variables, say).
    InProfile {
        /// The profile.
        profile: String,
        /// What went wrong.
        source: Box<Error>,
    },
    /// An environment variable holds a value that cannot be used, or lacks its companion.
    Variable {
        /// The variable.
        name: &'static str,
        /// What is wrong, without its value if that may be secret.
        problem: String,
    },
    /// No region is configured and none could be found.
    NoRegion {
        /// What was looked at.
        tried: String,
    },
    /// No source of credentials applies.
    NoCredentials {
        /// Each source tried and why it did not apply.
        tried: Vec<String>,
    },
    /// A service could not be reached at all: no connection was made.
    Unreachable {
        /// The service (`EC2 instance metadata`, `STS`, …).
        service: &'static str,
        /// The URL, without user-info, query or fragment.
        url: String,
        /// The client's error.
        source: ureq::Error,
    },
    /// A request to a service failed once a connection was made (a timeout, a reset).
    Http {
        /// The service.
        service: &'static str,
        /// The URL, without user-info, query or fragment.
        url: String,
        /// The client's error.
        source: ureq::Error,
    },
    /// A service answered with an error status, or with something that is not credentials.
    Answer {
        /// The service.
        service: &'static str,
        /// The URL, without user-info, query or fragment.
        url: String,
        /// What it answered, in a few words.
        problem: String,
    },
    /// STS refused a request.
    Sts {
        /// `AssumeRole` or `AssumeRoleWithWebIdentity`.
        action: &'static str,
        /// The role.
        role_arn: String,
        /// The error code STS gave (`AccessDenied`, …), or the HTTP status.
        code: String,
        /// STS's message, on one line.
        message: String,
    },
    /// `credential_process` failed.
    Process {
        /// What happened (`exited 3: <first line of its standard error>`, …).
        problem: String,
        /// The error that stopped it from being run or read, if that is what happened.
        source: Option<io::Error>,
    },
    /// A request could not be signed.
    Signing(Box<dyn std::error::Error + Send + Sync>),
    /// The credentials thread could not be started (`Some`), or has ended (`None`).
    Thread(Option<io::Error>),
    /// The daemon is stopping and no credentials came before its deadline.
    StopDeadline,
}

impl Error {
    /// Whether the configuration is wrong (a setting, a variable, a file, a profile): retrying
    /// cannot help until someone changes it, and start-up ends with exit status 2. Otherwise a
    /// source failed for now, and is retried. At run time both kinds are retried (a token
    /// file may be rotated back in).
    pub fn is_configuration(&self) -> bool {
        match self {
            Error::File { .. }
            | Error::CaBundle { .. }
            | Error::Profile { .. }
            | Error::Variable { .. }
            | Error::NoRegion { .. }
            | Error::NoCredentials { .. } => true,
            Error::InProfile { source, .. } => source.is_configuration(),
            Error::Unreachable { .. }
            | Error::Http { .. }
            | Error::Answer { .. }
            | Error::Sts { .. }
            | Error::Process { .. }
            | Error::Signing(_)
            | Error::Thread(_)
            | Error::StopDeadline => false,
        }
    }

    /// A service's answer that is not what was asked for.
    fn answer(service: &'static str, url: &str, problem: impl Into<String>) -> Error {
        Error::Answer {
            service,
            url: url.to_string(),
            problem: problem.into(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::File { what, path, source } => write!(f, "{what} {}: {source}", path.display()),
            Error::CaBundle { path, problem } => {
                write!(f, "--ca-bundle {}: {problem}", path.display())
            }
            Error::Profile {
                profile,
                files,
                problem,
            } => write!(f, "profile \"{profile}\" in {files}: {problem}"),
            Error::InProfile { profile, source } => write!(f, "profile \"{profile}\": {source}"),
            Error::Variable { name, problem } => write!(f, "{name}: {problem}"),
            Error::NoRegion { tried } => write!(
                f,
                "missing region: set --region, AWS_REGION or AWS_DEFAULT_REGION ({tried})"
            ),
            Error::NoCredentials { tried } => {
                write!(f, "no AWS credentials found; tried: {}", tried.join("; "))
            }
            Error::Unreachable {
                service,
                url,
                source,
            } => write!(f, "{service} at {url} cannot be reached: {source}"),
            Error::Http {
                service,
                url,
                source,
            } => write!(f, "{service} at {url}: {source}"),
            Error::Answer {
                service,
                url,
                problem,
            } => write!(f, "{service} at {url}: {problem}"),
            Error::Sts {
                action,
                role_arn,
                code,
                message,
            } => write!(f, "STS {action} of {role_arn}: {code}: {message}"),
            Error::Process {
                problem,
                source: None,
            } => write!(f, "credential_process {problem}"),
            Error::Process {
                problem,
                source: Some(e),
            } => write!(f, "credential_process {problem}: {e}"),
            Error::Signing(e) => write!(f, "cannot sign the request: {e}"),
            Error::Thread(Some(e)) => write!(f, "cannot start the credentials thread: {e}"),
            Error::Thread(None) => f.write_str("the credentials thread ended"),
            Error::StopDeadline => f.write_str("no credentials before the stop deadline"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::File { source, .. } => Some(source),
            Error::InProfile { source, .. } => Some(source.as_ref()),
            Error::Unreachable { source, .. } | Error::Http { source, .. } => Some(source),
            Error::Process {
                source: Some(e), ..
            }
            | Error::Thread(Some(e)) => Some(e),
            Error::Signing(e) => Some(e.as_ref()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_is_told_from_failing_for_now() {
        let missing = || io::Error::from(io::ErrorKind::NotFound);
        let config = [
            Error::File {
                what: "config file",
                path: "/c".into(),
                source: missing(),
            },
            Error::Variable {
                name: "AWS_ROLE_ARN",
                problem: "x".into(),
            },
            Error::NoCredentials { tried: vec![] },
            Error::InProfile {
                profile: "p".into(),
                source: Box::new(Error::NoRegion { tried: "x".into() }),
            },
        ];
        assert!(config.iter().all(Error::is_configuration));
        let for_now = [
            Error::answer(
                "EC2 instance metadata",
                "http://169.254.169.254/",
                "HTTP 503",
            ),
            Error::Process {
                problem: "exited 1".into(),
                source: None,
            },
            Error::StopDeadline,
            Error::InProfile {
                profile: "p".into(),
                source: Box::new(Error::Thread(None)),
            },
        ];
        assert!(!for_now.iter().any(Error::is_configuration));
    }

    #[test]
    fn messages_name_the_thing_and_keep_the_source() {
        use std::error::Error as _;
        let e = Error::InProfile {
            profile: "ci".into(),
            source: Box::new(Error::File {
                what: "web identity token file",
                path: "/t".into(),
                source: io::Error::from(io::ErrorKind::NotFound),
            }),
        };
        assert_eq!(
            e.to_string(),
            "profile \"ci\": web identity token file /t: entity not found"
        );
        let inner = e.source().unwrap();
        assert!(inner.source().is_some(), "the io::Error underneath");
        assert_eq!(
            Error::answer("STS", "https://sts.us-east-1.amazonaws.com/", "HTTP 500").to_string(),
            "STS at https://sts.us-east-1.amazonaws.com/: HTTP 500"
        );
    }
}
