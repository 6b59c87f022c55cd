//! Assuming a role with STS AssumeRole (`--role-arn`), on top of whatever credentials the
//! base provider found.
//!
//! The request is the STS Query protocol: a form body whose values are percent-encoded the way
//! the AWS SDKs do it (everything but `A-Za-z0-9-_.~`), signed with SigV4 for service `sts`.
//! The temporary credentials are cached and fetched again about five minutes (minus up to a
//! minute of jitter) before they expire, or at once after [`Provider::invalidate`]. This runs on
//! the sender thread, never on the poll loop.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ureq::Agent;

use crate::clock;
use crate::credentials::{Credentials, CredentialsError, Provider};
use crate::kinesis::one_line;
use crate::random::Rng;
use crate::sigv4;

/// Refresh this long before expiry (less up to [`REFRESH_JITTER`]).
pub const REFRESH_AHEAD: Duration = Duration::from_secs(300);
/// Spread of refresh times, so that many daemons do not refresh at once.
pub const REFRESH_JITTER: Duration = Duration::from_secs(60);

/// The regional STS endpoint: `https://sts.{region}.amazonaws.com` (`.com.cn` in China).
pub fn default_endpoint(region: &str) -> String {
    crate::config::regional_endpoint("sts", region)
}

/// The session name used when none is configured: `fifo2kinesis-<unix seconds>`.
pub fn default_session_name(now: SystemTime) -> String {
    format!(
        "fifo2kinesis-{}",
        now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
    )
}

/// What to assume and where.
#[derive(Clone, Debug)]
pub struct AssumeRoleSettings {
    /// The role's ARN.
    pub role_arn: String,
    /// The session name.
    pub session_name: String,
    /// The external ID the role's trust policy may require.
    pub external_id: Option<String>,
    /// STS endpoint URL.
    pub endpoint: String,
    /// Region to sign for.
    pub region: String,
}

/// Credentials from STS AssumeRole, refreshed ahead of expiry.
pub struct AssumeRole {
    base: Box<dyn Provider>,
    settings: AssumeRoleSettings,
    agent: Agent,
    cached: Option<(Credentials, SystemTime)>,
    rng: Rng,
}

impl AssumeRole {
    /// A provider assuming `settings.role_arn` with credentials from `base`.
    pub fn new(base: Box<dyn Provider>, settings: AssumeRoleSettings) -> Self {
        let agent: Agent = Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(5)))
            .timeout_global(Some(Duration::from_secs(30)))
            .user_agent(concat!("fifo2kinesis/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        AssumeRole {
            base,
            settings,
            agent,
            cached: None,
            rng: Rng::from_entropy(),
        }
    }

    fn fetch(&mut self, now: SystemTime) -> Result<Credentials, CredentialsError> {
        let err = |message: String| CredentialsError {
            source: format!("STS AssumeRole {}", self.settings.role_arn),
            message,
        };
        let base = self.base.credentials(now)?;
        let body = assume_role_form(&self.settings);
        let url = format!("{}/", self.settings.endpoint.trim_end_matches('/'));
        let headers = [(
            "content-type",
            "application/x-www-form-urlencoded; charset=utf-8",
        )];
        let signed = sigv4::sign(
            &base,
            &self.settings.region,
            "sts",
            &url,
            &headers,
            body.as_bytes(),
            SystemTime::now(),
        )
        .map_err(|e| err(e.to_string()))?;
        let mut request = self.agent.post(&url);
        for (name, value) in headers
            .iter()
            .map(|(n, v)| (*n, v.to_string()))
            .chain(signed)
        {
            request = request.header(name, value);
        }
        let mut response = request
            .send(body.as_bytes())
            .map_err(|e| err(one_line(&e.to_string(), 300)))?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .with_config()
            .limit(1024 * 1024)
            .read_to_string()
            .map_err(|e| err(one_line(&e.to_string(), 300)))?;
        if status != 200 {
            let code = xml_text(&text, "Code").unwrap_or_else(|| format!("HTTP {status}"));
            let message = xml_text(&text, "Message").unwrap_or_default();
            return Err(err(format!("{code}: {}", one_line(&message, 300))));
        }
        parse_assume_role_response(&text).map_err(err)
    }
}

impl Provider for AssumeRole {
    fn credentials(&mut self, now: SystemTime) -> Result<Credentials, CredentialsError> {
        if let Some((creds, refresh_at)) = &self.cached {
            if now < *refresh_at {
                return Ok(creds.clone());
            }
        }
        let creds = self.fetch(now)?;
        let jitter = Duration::from_millis(self.rng.below(REFRESH_JITTER.as_millis() as u64));
        let refresh_at = match creds.expiry() {
            Some(exp) => exp
                .checked_sub(REFRESH_AHEAD - jitter)
                .unwrap_or(now)
                .max(now),
            None => now + Duration::from_secs(3600),
        };
        crate::log!(
            Debug,
            "assumed role {}; credentials refresh in {:?}",
            self.settings.role_arn,
            refresh_at.duration_since(now).unwrap_or_default()
        );
        self.cached = Some((creds.clone(), refresh_at));
        Ok(creds)
    }

    fn invalidate(&mut self) {
        self.cached = None;
        self.base.invalidate();
    }
}

/// The AssumeRole form body, percent-encoded like the SDKs.
pub fn assume_role_form(s: &AssumeRoleSettings) -> String {
    let mut pairs = vec![
        ("Action", "AssumeRole"),
        ("Version", "2011-06-15"),
        ("RoleArn", s.role_arn.as_str()),
        ("RoleSessionName", s.session_name.as_str()),
    ];
    if let Some(id) = &s.external_id {
        pairs.push(("ExternalId", id.as_str()));
    }
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", percent_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
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

/// Reads `AssumeRoleResponse/AssumeRoleResult/Credentials`.
pub fn parse_assume_role_response(xml: &str) -> Result<Credentials, String> {
    let creds = xml_section(xml, "Credentials").ok_or("the answer has no Credentials")?;
    let field = |name: &str| {
        xml_text(creds, name).ok_or_else(|| format!("the answer's Credentials have no {name}"))
    };
    let expiration = field("Expiration")?;
    let expiry = clock::parse_rfc3339(&expiration)
        .ok_or_else(|| format!("unreadable Expiration {expiration:?}"))?;
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
        let c = parse_assume_role_response(ANSWER).unwrap();
        assert_eq!(c.access_key_id(), "ASIAIOSFODNN7EXAMPLE");
        assert_eq!(
            c.secret_access_key(),
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY"
        );
        assert_eq!(c.session_token(), Some("AQoDYXdzEPT//////////wEXAMPLE&="));
        assert_eq!(c.expiry(), clock::parse_rfc3339("2021-09-21T18:41:26Z"));
        assert!(parse_assume_role_response("<ErrorResponse/>").is_err());
        assert!(parse_assume_role_response(
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
        let s = AssumeRoleSettings {
            role_arn: "arn:aws:iam::123456789012:role/demo".into(),
            session_name: "a+b=c,d.e@f-g".into(),
            external_id: Some("ext id/1".into()),
            endpoint: String::new(),
            region: "us-east-1".into(),
        };
        assert_eq!(
            assume_role_form(&s),
            "Action=AssumeRole&Version=2011-06-15&RoleArn=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Fdemo\
             &RoleSessionName=a%2Bb%3Dc%2Cd.e%40f-g&ExternalId=ext%20id%2F1"
        );
    }

    #[test]
    fn endpoints_and_default_session_name() {
        assert_eq!(
            default_endpoint("eu-west-1"),
            "https://sts.eu-west-1.amazonaws.com"
        );
        assert_eq!(
            default_endpoint("cn-north-1"),
            "https://sts.cn-north-1.amazonaws.com.cn"
        );
        assert_eq!(
            default_session_name(UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
            "fifo2kinesis-1700000000"
        );
    }
}
