//! AWS endpoints: a service's URL in a region, FIPS and dualstack as asked, China's domains.
//! The endpoint URLs given by option or variable are checked with the options.

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_endpoints_by_region_fips_and_dualstack() {
        assert_eq!(
            service_endpoint("kinesis", "cn-north-1", false, false),
            "https://kinesis.cn-north-1.amazonaws.com.cn"
        );
        assert_eq!(
            service_endpoint("kinesis", "us-east-1", false, false),
            "https://kinesis.us-east-1.amazonaws.com"
        );
        assert_eq!(
            service_endpoint("kinesis", "us-east-1", true, false),
            "https://kinesis-fips.us-east-1.amazonaws.com"
        );
        assert_eq!(
            service_endpoint("kinesis", "us-east-1", false, true),
            "https://kinesis.us-east-1.api.aws"
        );
        assert_eq!(
            service_endpoint("sts", "us-gov-west-1", true, true),
            "https://sts-fips.us-gov-west-1.api.aws"
        );
        assert_eq!(
            service_endpoint("kinesis", "cn-north-1", false, true),
            "https://kinesis.cn-north-1.api.amazonwebservices.com.cn"
        );
    }
}
