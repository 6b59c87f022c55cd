//! AWS Signature Version 4 for our requests, through the aws-sigv4 crate.
//!
//! [`sign`] returns the headers to add (`x-amz-date`, `authorization`, and
//! `x-amz-security-token` when the credentials carry a session token). It signs exactly the
//! headers it is given plus `host`, which it derives from the URL the same way the HTTP client
//! writes it (default ports dropped), and the exact body bytes that will be sent.

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{self, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use sha2::{Digest, Sha256};

use super::Error;

/// Signs a POST of `body` to `url` with the given headers and returns the headers to add.
pub fn sign(
    creds: &Credentials,
    region: &str,
    service: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    time: SystemTime,
) -> Result<Vec<(&'static str, String)>, Error> {
    sign_body(
        creds,
        region,
        service,
        url,
        headers,
        SignableBody::Bytes(body),
        time,
    )
}

/// Like [`sign`], for a body whose SHA-256 (lowercase hex) was computed already.
pub fn sign_hashed(
    creds: &Credentials,
    region: &str,
    service: &str,
    url: &str,
    headers: &[(&str, &str)],
    body_sha256_hex: &str,
    time: SystemTime,
) -> Result<Vec<(&'static str, String)>, Error> {
    sign_body(
        creds,
        region,
        service,
        url,
        headers,
        SignableBody::Precomputed(body_sha256_hex.to_string()),
        time,
    )
}

fn sign_body(
    creds: &Credentials,
    region: &str,
    service: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: SignableBody<'_>,
    time: SystemTime,
) -> Result<Vec<(&'static str, String)>, Error> {
    let identity = creds.clone().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| Error::Signing(e.into()))?
        .into();
    let request = SignableRequest::new("POST", url, headers.iter().copied(), body)
        .map_err(|e| Error::Signing(e.into()))?;
    let (instructions, _signature) = http_request::sign(request, &params)
        .map_err(|e| Error::Signing(e.into()))?
        .into_parts();
    let (signed_headers, _params) = instructions.into_parts();
    Ok(signed_headers
        .into_iter()
        .map(|h| (h.name(), h.value().to_string()))
        .collect())
}

/// SHA-256 of a request body, lowercase hex (what SigV4 signs).
pub fn sha256_hex(body: &[u8]) -> String {
    hex(&Sha256::digest(body))
}

/// SHA-256 of a body given in parts, lowercase hex at the end.
#[derive(Clone, Debug, Default)]
pub struct BodyHash(Sha256);

impl BodyHash {
    /// Adds the next part.
    pub fn update(&mut self, part: &[u8]) {
        self.0.update(part);
    }

    /// The digest of every part, lowercase hex.
    pub fn finish(self) -> String {
        hex(&self.0.finalize())
    }
}

/// Lowercase hex.
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    /// The Kinesis-shaped vector: 2015-08-30T12:36:00Z, AKIDEXAMPLE/secret, us-east-1.
    fn vector(token: Option<&str>) -> Vec<(&'static str, String)> {
        let creds = Credentials::new(
            "AKIDEXAMPLE",
            "secret",
            token.map(String::from),
            None,
            "test",
        );
        let time = UNIX_EPOCH + Duration::from_secs(1_440_938_160);
        let body = br#"{"Records":[{"Data":"aGk=","PartitionKey":"k"}],"StreamName":"s"}"#;
        let headers = [
            ("content-type", "application/x-amz-json-1.1"),
            ("x-amz-target", "Kinesis_20131202.PutRecords"),
        ];
        sign(
            &creds,
            "us-east-1",
            "kinesis",
            "https://kinesis.us-east-1.amazonaws.com/",
            &headers,
            body,
            time,
        )
        .unwrap()
    }

    fn header<'a>(h: &'a [(&'static str, String)], name: &str) -> Option<&'a str> {
        h.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn kinesis_vector_without_token() {
        let h = vector(None);
        assert_eq!(header(&h, "x-amz-date"), Some("20150830T123600Z"));
        assert_eq!(
            header(&h, "authorization"),
            Some("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/kinesis/aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature=bd2d2e0e76095b07c33d6bc5905422e77f4c32cf9d11c27de64009490a19fa58")
        );
        assert_eq!(header(&h, "x-amz-security-token"), None);
    }

    #[test]
    fn a_precomputed_hash_signs_the_same() {
        let creds = Credentials::new("AKIDEXAMPLE", "secret", None, None, "test");
        let time = UNIX_EPOCH + Duration::from_secs(1_440_938_160);
        let body = br#"{"Records":[{"Data":"aGk=","PartitionKey":"k"}],"StreamName":"s"}"#;
        let headers = [
            ("content-type", "application/x-amz-json-1.1"),
            ("x-amz-target", "Kinesis_20131202.PutRecords"),
        ];
        let url = "https://kinesis.us-east-1.amazonaws.com/";
        let hash = sha256_hex(body);
        let hashed =
            sign_hashed(&creds, "us-east-1", "kinesis", url, &headers, &hash, time).unwrap();
        assert_eq!(hashed, vector(None));
        assert_eq!(hex(&[0x00, 0x9f, 0xff]), "009fff");
    }

    #[test]
    fn kinesis_vector_with_session_token() {
        let h = vector(Some("TOKEN"));
        let auth = header(&h, "authorization").unwrap();
        assert!(
            auth.contains(
                "SignedHeaders=content-type;host;x-amz-date;x-amz-security-token;x-amz-target,"
            ),
            "{auth}"
        );
        assert!(
            auth.ends_with(
                "Signature=2e3fa63cf24cb6b82f3d49004087f930ac807ef50729185f0f4d5e229a3a01e0"
            ),
            "{auth}"
        );
        assert_eq!(header(&h, "x-amz-security-token"), Some("TOKEN"));
    }
}
