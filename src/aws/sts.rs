//! STS: assuming a role with AssumeRole (signed, over other credentials) or with
//! AssumeRoleWithWebIdentity (unsigned, with a token from a file).
//!
//! Both use the STS Query protocol: a form body whose values are percent-encoded the way the
//! AWS SDKs do it (everything but `A-Za-z0-9-_.~`), answered in XML. Both are [`Fetch`]es, so
//! [`super::credentials::Refreshing`] caches their temporary credentials and fetches new ones
//! ahead of expiry, on the sender thread. The web identity token file is read at every fetch
//! (EKS rotates it).

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ureq::Agent;

use super::credentials::{Credentials, Fetch, Provider};
use super::http::{loggable_url, request_error, HttpSettings};
use super::{sigv4, Error};
use crate::clock;
use crate::log::one_line;

const SERVICE: &str = "STS";

/// The session name used when none is configured: `fifo2kinesis-<unix seconds>`.
pub fn default_session_name(now: SystemTime) -> String {
    format!(
        "fifo2kinesis-{}",
        now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
    )
}

/// Where STS is and how to reach it.
#[derive(Clone)]
pub struct Sts {
    /// Endpoint URL.
    pub endpoint: String,
    /// Region to sign for.
    pub region: String,
    agent: Agent,
}

impl Sts {
    /// STS at `endpoint`, signing for `region`.
    pub fn new(endpoint: String, region: String, http: &HttpSettings) -> Sts {
        Sts {
            endpoint,
            region,
            agent: http.service_agent(Duration::from_secs(5), Duration::from_secs(30)),
        }
    }

    /// Posts a form (signed with `creds` if given) and reads the credentials in the answer.
    fn call(
        &self,
        action: &'static str,
        role: &RoleSettings,
        form: &str,
        creds: Option<&Credentials>,
    ) -> Result<Credentials, Error> {
        let url = format!("{}/", self.endpoint.trim_end_matches('/'));
        let shown = loggable_url(&url);
        let headers = [(
            "content-type",
            "application/x-www-form-urlencoded; charset=utf-8",
        )];
        let mut all: Vec<(&str, String)> =
            headers.iter().map(|(n, v)| (*n, v.to_string())).collect();
        if let Some(creds) = creds {
            all.extend(sigv4::sign(
                creds,
                &self.region,
                "sts",
                &url,
                &headers,
                form.as_bytes(),
                SystemTime::now(),
            )?);
        }
        let mut request = self.agent.post(&url);
        for (name, value) in all {
            request = request.header(name, value);
        }
        let failed = |e| request_error(SERVICE, &shown, e);
        let mut response = request.send(form.as_bytes()).map_err(failed)?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .with_config()
            .limit(1024 * 1024)
            .read_to_string()
            .map_err(failed)?;
        if status != 200 {
            let code = xml_text(&text, "Code")
                .map_or_else(|| format!("HTTP {status}"), |c| one_line(&c, 100));
            let message = xml_text(&text, "Message").unwrap_or_default();
            return Err(Error::Sts {
                action,
                role_arn: role.role_arn.clone(),
                code,
                message: one_line(&message, 300),
            });
        }
        parse_credentials_response(&text)
            .map_err(|problem| Error::answer(SERVICE, &shown, format!("{action}: {problem}")))
    }
}

/// Whether `arn` can be the ARN of a role: `arn:PARTITION:iam::ACCOUNT:role/NAME`. The
/// problem, quoting it, if not.
pub fn check_role_arn(arn: &str) -> Result<(), String> {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    match parts[..] {
        ["arn", partition, "iam", "", account, resource]
            if !partition.is_empty()
                && !account.is_empty()
                && resource.len() > "role/".len()
                && resource.starts_with("role/") =>
        {
            Ok(())
        }
        _ => Err(format!(
            "{:?} is not a role ARN like arn:aws:iam::123456789012:role/NAME",
            one_line(arn, 200)
        )),
    }
}

/// Whether `name` can be a role session name: 2 to 64 of `A-Za-z0-9_+=,.@-`.
pub fn check_session_name(name: &str) -> Result<(), String> {
    let ok = (2..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_+=,.@-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{:?} is not 2 to 64 characters of letters, digits and _+=,.@-",
            one_line(name, 100)
        ))
    }
}

/// Whether `id` can be an external ID: 2 to 1224 of `A-Za-z0-9_+=,.@:/-`. It is not quoted.
pub fn check_external_id(id: &str) -> Result<(), String> {
    let ok = (2..=1224).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_+=,.@:/-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err("is not 2 to 1224 characters of letters, digits and _+=,.@:/-".into())
    }
}

/// What to assume.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleSettings {
    /// The role's ARN.
    pub role_arn: String,
    /// The session name.
    pub session_name: String,
    /// The external ID the role's trust policy may require (AssumeRole only).
    pub external_id: Option<String>,
}

/// Temporary credentials from STS AssumeRole, signed with the base provider's credentials.
pub struct AssumeRole {
    base: Box<dyn Provider>,
    role: RoleSettings,
    sts: Sts,
}

impl AssumeRole {
    /// Assumes `role` at `sts` with credentials from `base`.
    pub fn new(base: Box<dyn Provider>, role: RoleSettings, sts: Sts) -> Self {
        AssumeRole { base, role, sts }
    }
}

impl Fetch for AssumeRole {
    fn fetch(&mut self, now: SystemTime) -> Result<Credentials, Error> {
        let base = self.base.credentials(now)?;
        let form = assume_role_form(&self.role);
        self.sts
            .call("AssumeRole", &self.role, &form, Some(&base))
            .inspect_err(|_| {
                // The base credentials may be what is stale.
                self.base.invalidate();
            })
    }
}

/// Temporary credentials from STS AssumeRoleWithWebIdentity.
pub struct WebIdentity {
    token_file: PathBuf,
    role: RoleSettings,
    sts: Sts,
}

impl WebIdentity {
    /// Assumes `role` with the token in `token_file`.
    pub fn new(token_file: PathBuf, role: RoleSettings, sts: Sts) -> Self {
        WebIdentity {
            token_file,
            role,
            sts,
        }
    }
}

impl Fetch for WebIdentity {
    fn fetch(&mut self, _now: SystemTime) -> Result<Credentials, Error> {
        let token = std::fs::read_to_string(&self.token_file).map_err(|source| Error::File {
            what: "web identity token file",
            path: self.token_file.clone(),
            source,
        })?;
        let form = web_identity_form(&self.role, token.trim());
        self.sts
            .call("AssumeRoleWithWebIdentity", &self.role, &form, None)
    }
}

/// The AssumeRoleWithWebIdentity form body.
pub fn web_identity_form(role: &RoleSettings, token: &str) -> String {
    form(&[
        ("Action", "AssumeRoleWithWebIdentity"),
        ("Version", "2011-06-15"),
        ("RoleArn", &role.role_arn),
        ("RoleSessionName", &role.session_name),
        ("WebIdentityToken", token),
    ])
}

fn form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", percent_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// The AssumeRole form body, percent-encoded like the SDKs.
pub fn assume_role_form(role: &RoleSettings) -> String {
    let mut pairs = vec![
        ("Action", "AssumeRole"),
        ("Version", "2011-06-15"),
        ("RoleArn", role.role_arn.as_str()),
        ("RoleSessionName", role.session_name.as_str()),
    ];
    if let Some(id) = &role.external_id {
        pairs.push(("ExternalId", id.as_str()));
    }
    form(&pairs)
}

/// Percent-encodes everything except the unreserved characters `A-Za-z0-9-_.~`.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Reads the `Credentials` of an AssumeRole or AssumeRoleWithWebIdentity answer.
pub fn parse_credentials_response(xml: &str) -> Result<Credentials, String> {
    let creds = xml_section(xml, "Credentials").ok_or("the answer has no Credentials")?;
    let field = |name: &str| {
        xml_text(creds, name).ok_or_else(|| format!("the answer's Credentials have no {name}"))
    };
    let expiration = field("Expiration")?;
    let expiry = clock::parse_rfc3339(&expiration).ok_or_else(|| {
        format!(
            "the answer has an unreadable Expiration {:?}",
            one_line(&expiration, 64)
        )
    })?;
    Ok(Credentials::new(
        field("AccessKeyId")?,
        field("SecretAccessKey")?,
        Some(field("SessionToken")?),
        Some(expiry),
        "sts",
    ))
}

/// The inside of the first `<tag>…</tag>`.
fn xml_section<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = start + xml[start..].find(&close)?;
    Some(&xml[start..end])
}

/// The text of the first `<tag>…</tag>`, trimmed and with XML entities decoded.
fn xml_text(xml: &str, tag: &str) -> Option<String> {
    let raw = xml_section(xml, tag)?.trim();
    Some(
        raw.replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANSWER: &str = r#"<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleResult>
    <AssumedRoleUser><Arn>arn:aws:sts::123456789012:assumed-role/demo/s</Arn><AssumedRoleId>ARO123:s</AssumedRoleId></AssumedRoleUser>
    <Credentials>
      <AccessKeyId>ASIAIOSFODNN7EXAMPLE</AccessKeyId>
      <SecretAccessKey>wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY</SecretAccessKey>
      <SessionToken>AQoDYXdzEPT//////////wEXAMPLE&amp;=</SessionToken>
      <Expiration>2021-09-21T18:41:26Z</Expiration>
    </Credentials>
  </AssumeRoleResult>
</AssumeRoleResponse>"#;

    #[test]
    fn reads_the_credentials() {
        let c = parse_credentials_response(ANSWER).unwrap();
        assert_eq!(c.access_key_id(), "ASIAIOSFODNN7EXAMPLE");
        assert_eq!(
            c.secret_access_key(),
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY"
        );
        assert_eq!(c.session_token(), Some("AQoDYXdzEPT//////////wEXAMPLE&="));
        assert_eq!(c.expiry(), clock::parse_rfc3339("2021-09-21T18:41:26Z"));
        assert!(parse_credentials_response("<ErrorResponse/>").is_err());
        assert!(parse_credentials_response(
            "<Credentials><AccessKeyId>a</AccessKeyId></Credentials>"
        )
        .is_err());
    }

    #[test]
    fn error_answers_give_code_and_message() {
        let xml = "<ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code><Message>not &quot;allowed&quot;</Message></Error></ErrorResponse>";
        assert_eq!(xml_text(xml, "Code").as_deref(), Some("AccessDenied"));
        assert_eq!(xml_text(xml, "Message").as_deref(), Some("not \"allowed\""));
    }

    #[test]
    fn form_is_percent_encoded_like_the_sdks() {
        let s = RoleSettings {
            role_arn: "arn:aws:iam::123456789012:role/demo".into(),
            session_name: "a+b=c,d.e@f-g".into(),
            external_id: Some("ext id/1".into()),
        };
        assert_eq!(
            assume_role_form(&s),
            "Action=AssumeRole&Version=2011-06-15&RoleArn=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Fdemo\
             &RoleSessionName=a%2Bb%3Dc%2Cd.e%40f-g&ExternalId=ext%20id%2F1"
        );
    }

    #[test]
    fn web_identity_form_carries_the_token() {
        let s = RoleSettings {
            role_arn: "arn:aws:iam::1:role/w".into(),
            session_name: "s".into(),
            external_id: None,
        };
        assert_eq!(
            web_identity_form(&s, "eyJ.a.b"),
            "Action=AssumeRoleWithWebIdentity&Version=2011-06-15&RoleArn=arn%3Aaws%3Aiam%3A%3A1%3Arole%2Fw&RoleSessionName=s&WebIdentityToken=eyJ.a.b"
        );
    }

    #[test]
    fn role_settings_are_checked_before_sts_sees_them() {
        for ok in [
            "arn:aws:iam::123456789012:role/demo",
            "arn:aws-cn:iam::1:role/path/to/role",
            "arn:aws:iam::1:role/a:b",
        ] {
            assert_eq!(check_role_arn(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "demo",
            "arn:aws:iam::1:user/demo",
            "arn:aws:s3:::bucket",
            "arn:aws:iam::1:role/",
            "arn::iam::1:role/x",
            "arn:aws:iam:::role/x",
        ] {
            assert!(check_role_arn(bad).is_err(), "{bad}");
        }
        assert!(check_session_name("ci-session_1+=,.@").is_ok());
        assert!(check_session_name("a").is_err() && check_session_name(&"a".repeat(65)).is_err());
        assert!(check_session_name("a b").is_err());
        assert!(check_external_id("ext-1:/x").is_ok());
        assert!(check_external_id("x").is_err());
        assert!(!check_external_id("has space")
            .unwrap_err()
            .contains("space"));
    }

    #[test]
    fn the_default_session_name_is_the_time() {
        assert_eq!(
            default_session_name(UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
            "fifo2kinesis-1700000000"
        );
    }
}
