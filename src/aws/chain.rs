//! Finding credentials, the region and the endpoints the way the AWS CLI does.
//!
//! Credentials, first found wins:
//! 1. the environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`);
//! 2. the shared files' profile ([`super::profile`]): static keys, `credential_process`, a role
//!    over a source profile or `credential_source`, or web identity;
//! 3. web identity from `AWS_WEB_IDENTITY_TOKEN_FILE` and `AWS_ROLE_ARN`;
//! 4. the container endpoint (`AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` / `_FULL_URI`);
//! 5. EC2 instance metadata, probed once at start-up: a service that answers, even with an
//!    error (booting, throttled, no role yet), is used and retried while lines wait; one that
//!    cannot be reached at all means this is not an EC2 instance.
//!
//! `--role-arn` then assumes that role over what was found. Nothing found, and anything set
//! wrong (a profile, a variable, a role ARN), is a configuration error; the one that lists what
//! was tried when nothing is found. Region: `--region`, `AWS_REGION`, `AWS_DEFAULT_REGION`, the
//! profile's `region`, then instance metadata (if that answers but fails, the error is not a
//! configuration error: a restart may find it). Resolution happens at start-up; fetching and
//! refreshing happen later, on the credentials thread.

use std::time::SystemTime;

use super::container::ContainerCredentials;
use super::credentials::{self, Provider, Refreshing, Static};
use super::endpoint::service_endpoint;
use super::env::Env;
use super::http::HttpSettings;
use super::imds::{Imds, ImdsCredentials};
use super::process::ProcessCredentials;
use super::profile::{NamedSource, ProfileFiles, Source};
use super::sts::{self, AssumeRole, RoleSettings, Sts, WebIdentity};
use super::{Aws, Error};
use crate::options::KinesisConfig;

/// Resolves region, endpoint and credentials for `k` from the environment and shared files.
/// The credentials provider is the bare chain, not yet on a thread of its own.
pub fn resolve(k: &KinesisConfig, env: &Env) -> Result<Aws, Error> {
    let http = HttpSettings::with_ca_bundle(k.ca_bundle.as_deref())?;
    let files = ProfileFiles::load(env)?;
    let profile_name = env.get("AWS_PROFILE").unwrap_or("default").to_string();
    let imds = Imds::from_env(env, &http);

    let region = match &k.region {
        Some(r) => r.clone(),
        None => find_region(&files, &profile_name, imds.as_ref())?,
    };
    let endpoint = k.endpoint_url.clone().unwrap_or_else(|| {
        let service = k.destination.service();
        service_endpoint(service, &region, k.use_fips, k.use_dualstack)
    });
    let sts_endpoint = k
        .sts_endpoint_url
        .clone()
        .unwrap_or_else(|| service_endpoint("sts", &region, k.use_fips, k.use_dualstack));
    let ctx = Context {
        env,
        http: &http,
        imds: imds.as_ref(),
        sts: Sts::new(sts_endpoint, region.clone(), &http),
    };

    let (mut provider, mut source) = default_chain(&ctx, &files, &profile_name)?;
    if let Some(role_arn) = &k.role_arn {
        let role = RoleSettings {
            role_arn: role_arn.clone(),
            session_name: k
                .role_session_name
                .clone()
                .unwrap_or_else(|| sts::default_session_name(SystemTime::now())),
            external_id: k.role_external_id.clone(),
        };
        source = format!(
            "role {} (session {}) assumed at {} over {source}",
            role.role_arn,
            role.session_name,
            super::http::loggable_url(&ctx.sts.endpoint)
        );
        provider = Box::new(Refreshing::new(AssumeRole::new(
            provider,
            role,
            ctx.sts.clone(),
        )));
    }
    Ok(Aws {
        region,
        endpoint,
        credentials: provider,
        http,
        credentials_source: source,
    })
}

fn find_region(files: &ProfileFiles, profile: &str, imds: Option<&Imds>) -> Result<String, Error> {
    if let Some(r) = files
        .profile(profile)
        .and_then(|p| p.get("region").map(String::from))
    {
        return Ok(r);
    }
    let imds_said = match imds {
        None => "instance metadata is disabled".to_string(),
        Some(i) => match i.region() {
            Ok(r) => return Ok(r),
            Err(e @ Error::Unreachable { .. }) => e.to_string(),
            // There, but failing for now: not a configuration error.
            Err(e) => return Err(e),
        },
    };
    Err(Error::NoRegion {
        tried: format!(
            "profile \"{profile}\" in {} has no region; {imds_said}",
            files.describe()
        ),
    })
}

struct Context<'a> {
    env: &'a Env,
    http: &'a HttpSettings,
    imds: Option<&'a Imds>,
    sts: Sts,
}

/// The first credentials source that applies, and its description.
fn default_chain(
    ctx: &Context<'_>,
    files: &ProfileFiles,
    profile: &str,
) -> Result<(Box<dyn Provider>, String), Error> {
    let mut tried = Vec::new();

    if let Some(creds) = env_credentials(ctx.env)? {
        return Ok((Box::new(Static(creds)), "environment variables".into()));
    }
    tried.push("environment (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY not set)".to_string());

    match files.resolve(profile)? {
        Some(source) => {
            let provider = build(&source, ctx).map_err(|e| Error::InProfile {
                profile: profile.to_string(),
                source: Box::new(e),
            })?;
            return Ok((provider, format!("profile \"{profile}\"")));
        }
        None if ctx.env.get("AWS_PROFILE").is_some() && files.profile(profile).is_none() => {
            return Err(Error::Profile {
                profile: profile.to_string(),
                files: files.describe(),
                problem: "AWS_PROFILE names it, but neither file has it".into(),
            });
        }
        None => tried.push(format!(
            "profile \"{profile}\" in {} (no credentials)",
            files.describe()
        )),
    }

    match (
        ctx.env.get("AWS_WEB_IDENTITY_TOKEN_FILE"),
        ctx.env.get("AWS_ROLE_ARN"),
    ) {
        (Some(token_file), Some(role_arn)) => {
            let variable = |name, problem| Error::Variable { name, problem };
            sts::check_role_arn(role_arn).map_err(|e| variable("AWS_ROLE_ARN", e))?;
            let session_name = ctx.env.get("AWS_ROLE_SESSION_NAME");
            if let Some(name) = session_name {
                sts::check_session_name(name).map_err(|e| variable("AWS_ROLE_SESSION_NAME", e))?;
            }
            let source = Source::WebIdentity {
                role_arn: role_arn.into(),
                token_file: token_file.into(),
                session_name: session_name.map(String::from),
            };
            return Ok((
                build(&source, ctx)?,
                format!("web identity token {token_file} for {role_arn}"),
            ));
        }
        (None, None) => {
            tried.push("web identity (AWS_WEB_IDENTITY_TOKEN_FILE and AWS_ROLE_ARN not set)".into())
        }
        _ => tried
            .push("web identity (needs both AWS_WEB_IDENTITY_TOKEN_FILE and AWS_ROLE_ARN)".into()),
    }

    if let Some(c) = ContainerCredentials::from_env(ctx.env, ctx.http)? {
        let what = format!("container credentials at {}", c.shown_url());
        return Ok((Box::new(Refreshing::new(c)), what));
    }
    tried.push("container (AWS_CONTAINER_CREDENTIALS_RELATIVE_URI and _FULL_URI not set)".into());

    match ctx.imds {
        None => tried.push("EC2 instance metadata (disabled by AWS_EC2_METADATA_DISABLED)".into()),
        Some(imds) => {
            let imds_provider = || Box::new(Refreshing::new(ImdsCredentials::new(imds.clone())));
            match imds.role_name() {
                Ok(role) => {
                    let what =
                        format!("EC2 instance metadata at {} (role {role})", imds.endpoint());
                    return Ok((imds_provider(), what));
                }
                // Nothing there: not an EC2 instance.
                Err(e @ Error::Unreachable { .. }) => tried.push(e.to_string()),
                // There, but failing for now (booting, throttled): fetches retry it.
                Err(e) => {
                    crate::log!(
                        Warn,
                        "{e}; no role yet, but the service is there: using it, and retrying while lines wait"
                    );
                    let what = format!(
                        "EC2 instance metadata at {} (role not known yet)",
                        imds.endpoint()
                    );
                    return Ok((imds_provider(), what));
                }
            }
        }
    }
    Err(Error::NoCredentials { tried })
}

fn env_credentials(env: &Env) -> Result<Option<credentials::Credentials>, Error> {
    credentials::from_env(|name| env.os(name))
}

/// A provider for a profile's source.
fn build(source: &Source, ctx: &Context<'_>) -> Result<Box<dyn Provider>, Error> {
    let unset = |name, problem: &str| Error::Variable {
        name,
        problem: problem.into(),
    };
    let role = |role_arn: &String, session_name: &Option<String>, external_id| RoleSettings {
        role_arn: role_arn.clone(),
        session_name: session_name
            .clone()
            .unwrap_or_else(|| sts::default_session_name(SystemTime::now())),
        external_id,
    };
    Ok(match source {
        Source::Static(c) => Box::new(Static(c.clone())),
        Source::Process(cmd) => Box::new(Refreshing::new(ProcessCredentials::new(cmd.clone()))),
        Source::WebIdentity {
            role_arn,
            token_file,
            session_name,
        } => Box::new(Refreshing::new(WebIdentity::new(
            token_file.clone(),
            role(role_arn, session_name, None),
            ctx.sts.clone(),
        ))),
        Source::Named(NamedSource::Environment) => match env_credentials(ctx.env)? {
            Some(c) => Box::new(Static(c)),
            None => {
                return Err(unset(
                    "AWS_ACCESS_KEY_ID",
                    "not set (nor AWS_SECRET_ACCESS_KEY), but credential_source is Environment",
                ))
            }
        },
        Source::Named(NamedSource::Ec2InstanceMetadata) => match ctx.imds {
            Some(imds) => Box::new(Refreshing::new(ImdsCredentials::new(imds.clone()))),
            None => {
                return Err(unset(
                    "AWS_EC2_METADATA_DISABLED",
                    "true, but credential_source is Ec2InstanceMetadata",
                ))
            }
        },
        Source::Named(NamedSource::EcsContainer) => {
            match ContainerCredentials::from_env(ctx.env, ctx.http)? {
                Some(c) => Box::new(Refreshing::new(c)),
                None => {
                    return Err(unset(
                        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                        "not set (nor _FULL_URI), but credential_source is EcsContainer",
                    ))
                }
            }
        }
        Source::AssumeRole {
            role_arn,
            external_id,
            session_name,
            base,
        } => Box::new(Refreshing::new(AssumeRole::new(
            build(base, ctx)?,
            role(role_arn, session_name, external_id.clone()),
            ctx.sts.clone(),
        ))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k() -> KinesisConfig {
        KinesisConfig {
            destination: crate::options::Destination::Stream("s".into()),
            region: Some("us-east-1".into()),
            endpoint_url: None,
            sts_endpoint_url: None,
            use_fips: false,
            use_dualstack: false,
            ca_bundle: None,
            role_arn: None,
            role_session_name: None,
            role_external_id: None,
        }
    }

    fn env(pairs: &[(&str, &str)]) -> Env {
        let mut all = vec![
            ("HOME", "/nonexistent-home"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ];
        all.extend_from_slice(pairs);
        Env::from_pairs(all.iter().map(|(a, b)| (a.to_string(), b.to_string())))
    }

    #[test]
    fn environment_comes_first() {
        let aws = resolve(
            &k(),
            &env(&[
                ("AWS_ACCESS_KEY_ID", "A"),
                ("AWS_SECRET_ACCESS_KEY", "S"),
                ("AWS_ROLE_ARN", "arn:aws:iam::1:role/x"),
            ]),
        )
        .unwrap();
        assert_eq!(aws.credentials_source, "environment variables");
        assert_eq!(aws.endpoint, "https://kinesis.us-east-1.amazonaws.com");
    }

    #[test]
    fn nothing_found_lists_what_was_tried() {
        let e = resolve(&k(), &env(&[])).err().unwrap().to_string();
        for needle in [
            "no AWS credentials found",
            "environment",
            "profile \"default\"",
            "web identity",
            "container",
            "EC2 instance metadata (disabled",
        ] {
            assert!(e.contains(needle), "{needle}: {e}");
        }
        assert!(!e.contains('\n'));
    }

    #[test]
    fn instance_metadata_that_cannot_be_reached_is_not_a_source() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}");
        let e = resolve(
            &k(),
            &env(&[
                ("AWS_EC2_METADATA_DISABLED", "false"),
                ("AWS_EC2_METADATA_SERVICE_ENDPOINT", &url),
            ]),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.starts_with("no AWS credentials found"), "{e}");
        assert!(
            e.contains(&format!(
                "EC2 instance metadata at {url}/latest/api/token cannot be reached"
            )),
            "{e}"
        );
    }

    /// Answers every request on 127.0.0.1 with `status` and no body; returns its URL.
    fn answering(status: u16) -> String {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let mut reader = BufReader::new(conn);
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let answer = format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n");
                let _ = reader.get_mut().write_all(answer.as_bytes());
            }
        });
        url
    }

    #[test]
    fn a_region_from_instance_metadata_failing_for_now_is_not_a_configuration_error() {
        let url = answering(503);
        let mut c = k();
        c.region = None;
        let e = resolve(
            &c,
            &env(&[
                ("AWS_EC2_METADATA_DISABLED", "false"),
                ("AWS_EC2_METADATA_SERVICE_ENDPOINT", &url),
                ("AWS_ACCESS_KEY_ID", "A"),
                ("AWS_SECRET_ACCESS_KEY", "S"),
            ]),
        )
        .err()
        .unwrap();
        assert!(!e.is_configuration(), "{e}");
        assert_eq!(
            e.to_string(),
            format!("EC2 instance metadata at {url}/latest/api/token: answered HTTP 503")
        );
        // With the region set, the same service is the credentials source.
        let aws = resolve(
            &k(),
            &env(&[
                ("AWS_EC2_METADATA_DISABLED", "false"),
                ("AWS_EC2_METADATA_SERVICE_ENDPOINT", &url),
            ]),
        )
        .unwrap();
        assert_eq!(
            aws.credentials_source,
            format!("EC2 instance metadata at {url} (role not known yet)")
        );
    }

    #[test]
    fn a_missing_named_profile_is_an_error() {
        let e = resolve(&k(), &env(&[("AWS_PROFILE", "ci")]))
            .err()
            .unwrap()
            .to_string();
        assert!(e.starts_with("profile \"ci\" in /nonexistent-home/.aws/config and /nonexistent-home/.aws/credentials: AWS_PROFILE names it"), "{e}");
    }

    #[test]
    fn a_delivery_stream_uses_firehose_endpoints() {
        let keys = env(&[("AWS_ACCESS_KEY_ID", "A"), ("AWS_SECRET_ACCESS_KEY", "S")]);
        let mut c = k();
        c.destination = crate::options::Destination::DeliveryStream("d".into());
        let endpoint = |c: &KinesisConfig| resolve(c, &keys).unwrap().endpoint;
        assert_eq!(endpoint(&c), "https://firehose.us-east-1.amazonaws.com");
        c.use_fips = true;
        assert_eq!(
            endpoint(&c),
            "https://firehose-fips.us-east-1.amazonaws.com"
        );
        c.use_fips = false;
        c.region = Some("cn-north-1".into());
        assert_eq!(endpoint(&c), "https://firehose.cn-north-1.amazonaws.com.cn");
        c.use_dualstack = true;
        assert_eq!(
            endpoint(&c),
            "https://firehose.cn-north-1.api.amazonwebservices.com.cn"
        );
        c.endpoint_url = Some("http://127.0.0.1:9".into());
        assert_eq!(endpoint(&c), "http://127.0.0.1:9");
    }

    #[test]
    fn region_from_the_profile_and_fips_endpoints() {
        let dir = std::env::temp_dir().join(format!("f2k-chain-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("config");
        std::fs::write(
            &config,
            "[profile ci]\nregion = eu-central-1\ncredential_process = true\n",
        )
        .unwrap();
        let mut c = k();
        c.region = None;
        c.use_fips = true;
        let aws = resolve(
            &c,
            &env(&[
                ("AWS_PROFILE", "ci"),
                ("AWS_CONFIG_FILE", config.to_str().unwrap()),
            ]),
        )
        .unwrap();
        assert_eq!(aws.region, "eu-central-1");
        assert_eq!(
            aws.endpoint,
            "https://kinesis-fips.eu-central-1.amazonaws.com"
        );
        assert_eq!(aws.credentials_source, "profile \"ci\"");
        std::fs::remove_dir_all(&dir).unwrap();
        let e = resolve(
            &c,
            &env(&[("AWS_ACCESS_KEY_ID", "A"), ("AWS_SECRET_ACCESS_KEY", "S")]),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(
            e.starts_with("missing region: set --region, AWS_REGION or AWS_DEFAULT_REGION"),
            "{e}"
        );
    }

    #[test]
    fn bad_container_uri_is_refused() {
        let e = resolve(
            &k(),
            &env(&[(
                "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                "http://10.1.2.3/creds",
            )]),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("not https"), "{e}");
    }
}
