//! AWS endpoints: a service's URL in a region (FIPS, dualstack, China), and the check of an
//! endpoint URL given by option or environment.
//!
//! These are AWS rules rather than option handling; they live here until the AWS code has a
//! home of its own.

use super::{invalid, ConfigError};

/// `https://kinesis.{region}.amazonaws.com`, with `.amazonaws.com.cn` in China regions.
pub fn default_endpoint(region: &str) -> String {
    regional_endpoint("kinesis", region)
}

/// A service's endpoint in `region`, FIPS and/or dualstack as asked:
/// `{service}[-fips].{region}.amazonaws.com`, or `.api.aws` for dualstack (in China:
/// `.amazonaws.com.cn` and `.api.amazonwebservices.com.cn`).
pub fn service_endpoint(service: &str, region: &str, fips: bool, dualstack: bool) -> String {
    let china = region.starts_with("cn-");
    let suffix = match (dualstack, china) {
        (false, false) => "amazonaws.com",
        (false, true) => "amazonaws.com.cn",
        (true, false) => "api.aws",
        (true, true) => "api.amazonwebservices.com.cn",
    };
    let fips = if fips { "-fips" } else { "" };
    format!("https://{service}{fips}.{region}.{suffix}")
}

/// `https://{service}.{region}.amazonaws.com`, with `.amazonaws.com.cn` in China regions.
pub fn regional_endpoint(service: &str, region: &str) -> String {
    let suffix = if region.starts_with("cn-") {
        "amazonaws.com.cn"
    } else {
        "amazonaws.com"
    };
    format!("https://{service}.{region}.{suffix}")
}

/// An endpoint URL as given by `who` (an option or a variable), without a trailing `/`.
pub(super) fn checked_endpoint(who: &str, u: &str) -> Result<String, ConfigError> {
    let u = u.trim();
    let rest = u
        .strip_prefix("https://")
        .or_else(|| u.strip_prefix("http://"));
    let host = rest.map(|r| r.split('/').next().unwrap_or(""));
    match host {
        Some(h) if !h.is_empty() && !h.contains(['?', '#', '@', ' ']) => {
            Ok(u.trim_end_matches('/').to_string())
        }
        _ => Err(invalid(
            who,
            u,
            "an http:// or https:// URL with a host, like https://kinesis.us-east-1.amazonaws.com",
        )),
    }
}
