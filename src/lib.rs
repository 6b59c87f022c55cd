//! fifo2kinesis reads lines from a named pipe (FIFO) and publishes them to an Amazon Kinesis
//! Data Stream.
//!
//! The binary is a thin wrapper around [`run`]: one poll loop on the main thread reads the
//! FIFO ([`fifo`]), splits lines ([`lines`]) and fills batches ([`batch`]); a sender thread
//! ([`sender`]) signs ([`sigv4`]) and sends them ([`sink`], [`kinesis`]), retrying what can be
//! retried and keeping what cannot in the failed-attempts directory ([`spool`]).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod log;

pub mod batch;
pub mod clock;
pub mod config;
pub mod credentials;
pub mod daemon;
pub mod fifo;
pub mod kinesis;
pub mod lines;
pub mod random;
pub mod sender;
pub mod signals;
pub mod sigv4;
pub mod sink;
pub mod spool;
pub mod stats;
pub mod sts;

use std::ffi::OsString;
use std::fmt;
use std::sync::Arc;

use config::{Config, Handler};
use daemon::{Outcome, Parts};
use sink::{HttpTimeouts, KinesisSink, LoggerSink, Sink};

/// Why a run could not start or had to end.
#[derive(Debug)]
pub enum Error {
    /// A setting or the environment is wrong (exit status 2).
    Setup(String),
    /// Something failed while running (exit status 1).
    Runtime(std::io::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Setup(msg) => f.write_str(msg),
            Error::Runtime(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Setup(_) => None,
            Error::Runtime(e) => Some(e),
        }
    }
}

/// Sets everything up from `config` and the process environment, then runs until stopped.
pub fn run(config: Config) -> Result<Outcome, Error> {
    // Before any thread exists, so that every thread inherits the blocked signals.
    let signals = signals::block()
        .map_err(|e| Error::Setup(format!("cannot set up signal handling: {e}")))?;
    if let Some(dir) = &config.failed_attempts_dir {
        spool::prepare_dir(dir)
            .map_err(|e| Error::Setup(format!("--failed-attempts-dir: {}: {e}", dir.display())))?;
    }
    let sink = make_sink(&config, |k| std::env::var_os(k))?;
    let input = fifo::Input::open(&config.input).map_err(|e| Error::Setup(e.to_string()))?;
    let stats = Arc::new(stats::Stats::default());
    daemon::run(
        config,
        Parts {
            input,
            signals,
            sink,
            stats,
        },
    )
    .map_err(Error::Runtime)
}

/// Builds the flush handler the configuration names.
pub fn make_sink(
    config: &Config,
    env: impl Fn(&str) -> Option<OsString>,
) -> Result<Box<dyn Sink>, Error> {
    match (config.handler, &config.kinesis) {
        (Handler::Logger, _) => Ok(Box::new(LoggerSink::stdout())),
        (Handler::Kinesis, None) => Err(Error::Setup(
            "the kinesis handler needs --stream-name and a region".into(),
        )),
        (Handler::Kinesis, Some(k)) => {
            let creds = credentials::from_env(&env).map_err(|e| Error::Setup(format!("AWS credentials: {e}")))?.ok_or_else(|| {
                Error::Setup("no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for temporary ones)".into())
            })?;
            let mut provider: Box<dyn credentials::Provider> = Box::new(credentials::Static(creds));
            if let Some(role_arn) = &k.role_arn {
                let endpoint = ["AWS_ENDPOINT_URL_STS", "AWS_ENDPOINT_URL"]
                    .into_iter()
                    .find_map(|name| {
                        env(name)
                            .and_then(|v| v.into_string().ok())
                            .filter(|v| !v.trim().is_empty())
                    })
                    .map(|v| v.trim().trim_end_matches('/').to_string())
                    .unwrap_or_else(|| sts::default_endpoint(&k.region));
                let session_name = k
                    .role_session_name
                    .clone()
                    .unwrap_or_else(|| sts::default_session_name(std::time::SystemTime::now()));
                log!(
                    Info,
                    "assuming role {role_arn} (session {session_name}) at {endpoint}"
                );
                let settings = sts::AssumeRoleSettings {
                    role_arn: role_arn.clone(),
                    session_name,
                    external_id: None,
                    endpoint,
                    region: k.region.clone(),
                };
                provider = Box::new(sts::AssumeRole::new(provider, settings));
            }
            log!(
                Info,
                "publishing to stream {} in {} at {}",
                k.stream_name,
                k.region,
                k.endpoint
            );
            Ok(Box::new(KinesisSink::new(
                &k.endpoint,
                &k.region,
                &k.stream_name,
                provider,
                HttpTimeouts::default(),
            )))
        }
    }
}
