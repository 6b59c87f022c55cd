//! `credential_process`: credentials printed by a command of the user's.
//!
//! The command runs with `sh -c`, standard input closed. It must exit 0 and print JSON
//! `{"Version":1,"AccessKeyId":…,"SecretAccessKey":…,"SessionToken"?:…,"Expiration"?:…}`.
//! A failure is reported with the exit status and the first line of its standard error; its
//! standard output (which holds secrets) is never logged. A command that runs over a minute is
//! killed.

use std::io::Read;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use crate::credentials::{parse_json_credentials, Credentials, CredentialsError, Fetch};
use crate::log::one_line;

/// How long the command may run.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// Runs a configured `credential_process` at every fetch.
pub struct ProcessCredentials {
    command: String,
}

impl ProcessCredentials {
    /// A provider running `command`.
    pub fn new(command: impl Into<String>) -> Self {
        ProcessCredentials {
            command: command.into(),
        }
    }

    fn run(&self) -> Result<Credentials, String> {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(&self.command)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start sh: {e}"))?;
        let mut out = child.stdout.take().expect("stdout is piped");
        let mut err = child.stderr.take().expect("stderr is piped");
        let reader = thread::spawn(move || {
            let mut v = Vec::new();
            let _ = out.by_ref().take(1024 * 1024).read_to_end(&mut v);
            v
        });
        let err_reader = thread::spawn(move || {
            let mut v = Vec::new();
            let _ = err.by_ref().take(64 * 1024).read_to_end(&mut v);
            v
        });
        let deadline = Instant::now() + TIMEOUT;
        let status = loop {
            match child.try_wait().map_err(|e| e.to_string())? {
                Some(s) => break s,
                None if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!(
                        "credential_process ran over {TIMEOUT:?} and was killed"
                    ));
                }
                None => thread::sleep(Duration::from_millis(10)),
            }
        };
        let stdout = reader.join().unwrap_or_default();
        let stderr = err_reader.join().unwrap_or_default();
        if !status.success() {
            let first = String::from_utf8_lossy(&stderr)
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty())
                .unwrap_or("")
                .to_string();
            let code = status
                .code()
                .map_or_else(|| "on a signal".to_string(), |c| c.to_string());
            return Err(format!(
                "credential_process exited {code}: {}",
                one_line(&first, 200)
            ));
        }
        parse_output(&stdout)
    }
}

/// Reads the command's JSON output.
pub fn parse_output(stdout: &[u8]) -> Result<Credentials, String> {
    let v: serde_json::Value = serde_json::from_slice(stdout)
        .map_err(|_| "credential_process printed something that is not JSON".to_string())?;
    match v.get("Version").and_then(serde_json::Value::as_u64) {
        Some(1) => {}
        other => {
            return Err(format!(
                "credential_process output has Version {other:?}; only 1 is known"
            ))
        }
    }
    parse_json_credentials(stdout, "SessionToken", "credential_process")
        .map_err(|e| format!("credential_process output: {e}"))
}

impl Fetch for ProcessCredentials {
    fn fetch(&mut self, _now: SystemTime) -> Result<Credentials, CredentialsError> {
        self.run()
            .map_err(|m| CredentialsError::new("credential_process", m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_parsing() {
        let c = parse_output(br#"{"Version":1,"AccessKeyId":"A","SecretAccessKey":"S","SessionToken":"T","Expiration":"2030-01-01T00:00:00Z"}"#).unwrap();
        assert_eq!((c.access_key_id(), c.session_token()), ("A", Some("T")));
        assert_eq!(
            c.expiry(),
            crate::clock::parse_rfc3339("2030-01-01T00:00:00Z")
        );
        let c = parse_output(br#"{"Version":1,"AccessKeyId":"A","SecretAccessKey":"S"}"#).unwrap();
        assert_eq!((c.session_token(), c.expiry()), (None, None));
        assert!(
            parse_output(br#"{"Version":2,"AccessKeyId":"A","SecretAccessKey":"S"}"#)
                .unwrap_err()
                .contains("Version")
        );
        assert!(parse_output(br#"{"Version":1,"AccessKeyId":"A"}"#)
            .unwrap_err()
            .contains("SecretAccessKey"));
        let e = parse_output(b"AKIA SECRETVALUE").unwrap_err();
        assert!(!e.contains("SECRETVALUE"));
    }

    #[test]
    fn runs_the_command_and_reports_failures() {
        let mut p = ProcessCredentials::new(
            r#"printf '{"Version":1,"AccessKeyId":"PK","SecretAccessKey":"PS"}'"#,
        );
        assert_eq!(p.fetch(SystemTime::now()).unwrap().access_key_id(), "PK");
        let mut p =
            ProcessCredentials::new("echo 'no such profile' >&2; echo leaked-secret; exit 3");
        let e = p.fetch(SystemTime::now()).unwrap_err().to_string();
        assert_eq!(
            e,
            "credential_process: credential_process exited 3: no such profile"
        );
    }
}
