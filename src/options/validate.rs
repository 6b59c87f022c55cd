//! From [`RawArgs`] to one [`Config`]: the checks that involve more than one value (limits
//! that depend on the handler, the partition key or another limit), required options, and
//! the Kinesis settings, which are read only when the handler is `kinesis`.
//!
//! Checks apply to the values the user gave; a default is taken as it is.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::time::Duration;

use super::defs::{self, OptId};
use super::parse::{Given, KinesisArgs, Origin, RawArgs};
use super::{
    invalid, parse_bool, Config, ConfigError, Destination, Handler, Input, KinesisConfig,
    PartitionKey, API_MAX_BYTES, FIREHOSE_MAX_RECORD_BYTES, FIREHOSE_MAX_REQUEST_BYTES,
    MAX_PARTITION_KEY_CHARS, MAX_RECORDS_PER_REQUEST, MIN_AGGREGATE_BYTES,
};

/// Checks `raw` as a whole and builds the configuration.
pub(super) fn validate(raw: RawArgs) -> Result<Config, ConfigError> {
    let handler = raw.flush_handler.value;
    let input = match raw.fifo_name {
        None => return Err(missing(OptId::FifoName, "")),
        Some(g) if g.value == OsStr::new("-") => Input::Stdin,
        Some(g) => Input::Fifo(PathBuf::from(g.value)),
    };
    // Firehose records have no partition key, and each carries its line's newline. Which
    // destination it is comes first: the checks below depend on it.
    let kinesis = match handler {
        Handler::Logger => None,
        Handler::Kinesis => Some(kinesis_config(raw.kinesis)?),
    };
    let firehose = kinesis
        .as_ref()
        .is_some_and(|k| matches!(k.destination, Destination::DeliveryStream(_)));
    let partition_key = match raw.partition_key {
        // Empty is random too, as in the Go tool (a record cannot have an empty key).
        None => PartitionKey::Random,
        Some(g) if g.value.is_empty() => PartitionKey::Random,
        Some(g) if firehose => {
            return Err(g.invalid(
                "no value with --delivery-stream: Firehose records have no partition key",
            ))
        }
        Some(g) => PartitionKey::Fixed(g.checked(|k| {
            if k.chars().count() > MAX_PARTITION_KEY_CHARS {
                Err("at most 256 characters".into())
            } else {
                Ok(())
            }
        })?),
    };
    let buffer_queue_limit = raw.buffer_queue_limit.checked(|&n| match handler {
        Handler::Kinesis if !(1..=MAX_RECORDS_PER_REQUEST).contains(&n) => {
            Err("a number from 1 to 500 with the kinesis flush handler".into())
        }
        _ if n == 0 => Err("a whole number of records, at least 1".into()),
        _ => Ok(()),
    })?;

    let key_len = partition_key.len();
    let record_given = (
        raw.max_record_bytes.name(),
        raw.max_record_bytes.text.clone(),
    );
    // Firehose's limits are its defaults, and cannot be raised.
    let record_default = raw.max_record_bytes.from == Origin::Default;
    let max_record_bytes = raw.max_record_bytes.checked(|&n| {
        if firehose && !(2..=FIREHOSE_MAX_RECORD_BYTES).contains(&n) {
            Err(
                "with --delivery-stream, a size above 1 byte (a line's newline) and at most \
                 1000KiB"
                    .into(),
            )
        } else if n <= key_len || n > API_MAX_BYTES {
            Err(format!(
                "a size above the partition key's {key_len} bytes and at most 10MiB"
            ))
        } else {
            Ok(())
        }
    })?;
    let max_record_bytes = if firehose && record_default {
        FIREHOSE_MAX_RECORD_BYTES
    } else {
        max_record_bytes
    };
    let request_default = raw.max_request_bytes.from == Origin::Default;
    let max_request_bytes = raw.max_request_bytes.checked(|&n| {
        let most = if firehose {
            FIREHOSE_MAX_REQUEST_BYTES
        } else {
            API_MAX_BYTES
        };
        if n < max_record_bytes || n > most {
            Err(format!(
                "a size from --max-record-bytes ({max_record_bytes}) to {}",
                if firehose {
                    "4MiB with --delivery-stream"
                } else {
                    "10MiB"
                }
            ))
        } else {
            Ok(())
        }
    })?;
    let max_request_bytes = if firehose && request_default {
        FIREHOSE_MAX_REQUEST_BYTES
    } else {
        max_request_bytes
    };
    let aggregate = if raw.aggregate.value {
        // Even a line alone is wrapped in an aggregate (with Firehose, followed by its
        // newline): the record must hold one line more.
        let lone = if firehose {
            1
        } else {
            crate::sink::kinesis::aggregate::lone_line_overhead(key_len)
        };
        if max_record_bytes <= lone {
            return Err(invalid(
                &record_given.0,
                &record_given.1,
                &format!("with --aggregate, a size above the {lone} bytes an aggregated record adds to a line and its partition key"),
            ));
        }
        // A given value is checked; the default is lowered to a smaller --max-record-bytes.
        // Firehose bills whole records, rounded up to 5KB: its default is the largest.
        let aggregate_default = raw.aggregate_max_bytes.from == Origin::Default;
        let least = MIN_AGGREGATE_BYTES.min(max_record_bytes);
        let n = raw.aggregate_max_bytes.checked(|&n| {
            if !(least..=max_record_bytes).contains(&n) {
                Err(if least == MIN_AGGREGATE_BYTES {
                    format!("a size from 1KiB to --max-record-bytes ({max_record_bytes})")
                } else {
                    format!("at most --max-record-bytes ({max_record_bytes})")
                })
            } else {
                Ok(())
            }
        })?;
        Some(if firehose && aggregate_default {
            max_record_bytes
        } else {
            n.min(max_record_bytes)
        })
    } else {
        None
    };
    let max_buffer_bytes = raw.max_buffer_bytes.checked(|&n| {
        if n < 2 * max_request_bytes {
            Err(format!(
                "a size of at least twice --max-request-bytes ({})",
                2 * max_request_bytes
            ))
        } else {
            Ok(())
        }
    })?;
    let cap_given = (
        raw.failed_attempts_max_bytes.name(),
        raw.failed_attempts_max_bytes.text.clone(),
    );
    let failed_attempts_max_bytes = raw.failed_attempts_max_bytes.checked(|&n| {
        if n == 0 {
            Err("a size above zero".into())
        } else {
            Ok(())
        }
    })? as u64;

    let durable = raw.durable.value;
    // The journal holds at least a batch being filled and one being sent.
    if durable && failed_attempts_max_bytes < 2 * max_request_bytes as u64 {
        return Err(ConfigError::Invalid {
            option: cap_given.0,
            value: cap_given.1,
            expected: format!(
                "with --durable, a size of at least twice --max-request-bytes ({})",
                2 * max_request_bytes
            ),
        });
    }
    if durable && raw.failed_attempts_dir.is_none() {
        return Err(ConfigError::Missing {
            option: "--failed-attempts-dir".into(),
            hint: format!(
                "{} keeps its journal there; set FIFO2KINESIS_FAILED_ATTEMPTS_DIR or the option",
                raw.durable.name()
            ),
        });
    }

    let retry_interval = raw.retry_interval.checked(|d| {
        if d.is_zero() {
            Err("a duration above zero (30s, 500ms)".into())
        } else {
            Ok(())
        }
    })?;
    let request_timeout = raw.request_timeout.checked(|&d| {
        if d < Duration::from_millis(100) {
            Err("a duration of at least 100ms (30s, 2s)".into())
        } else {
            Ok(())
        }
    })?;
    let stats_interval = raw.stats_interval.checked(|d| {
        if !d.is_zero() && *d < Duration::from_secs(1) {
            Err("0 (off) or a duration of at least 1s (60s, 5m)".into())
        } else {
            Ok(())
        }
    })?;

    Ok(Config {
        input,
        handler,
        kinesis,
        partition_key,
        buffer_queue_limit,
        failed_attempts_dir: raw.failed_attempts_dir.map(|g| PathBuf::from(g.value)),
        flush_interval: nonzero(raw.flush_interval.value),
        max_record_bytes,
        max_request_bytes,
        aggregate,
        shutdown_timeout: raw.shutdown_timeout.value,
        max_buffer_bytes,
        failed_attempts_max_bytes,
        durable,
        fsync_interval: raw.fsync_interval.value,
        retry_interval,
        request_timeout,
        stats_interval: nonzero(stats_interval),
        metrics_file: raw.metrics_file.map(|g| PathBuf::from(g.value)),
        debug: raw.debug.value,
    })
}

/// `None` for zero, which turns a timer off.
fn nonzero(d: Duration) -> Option<Duration> {
    (!d.is_zero()).then_some(d)
}

/// The error for a required option that is missing; `also` says when it is not needed.
fn missing(id: OptId, also: &str) -> ConfigError {
    let opt = defs::def(id);
    ConfigError::Missing {
        option: opt.flag(),
        hint: format!("or {}{also}", opt.var.unwrap_or_default()),
    }
}

fn kinesis_config(k: KinesisArgs) -> Result<KinesisConfig, ConfigError> {
    let destination = match (k.stream_name, k.delivery_stream) {
        (None, None) => {
            return Err(missing(
                OptId::StreamName,
                ", or --delivery-stream for Firehose; not needed with --flush-handler logger",
            ))
        }
        (Some(s), Some(d)) => {
            return Err(ConfigError::Usage(format!(
                "{} and {} are both set: the kinesis handler publishes to a stream or to a \
                 delivery stream, not both",
                s.name(),
                d.name()
            )))
        }
        (Some(g), None) => Destination::Stream(g.checked(|s| {
            if valid_stream_name(s, 128) {
                Ok(())
            } else {
                Err("1 to 128 characters of a-z A-Z 0-9 _ . -".into())
            }
        })?),
        (None, Some(g)) => Destination::DeliveryStream(g.checked(|s| {
            if valid_stream_name(s, 64) {
                Ok(())
            } else {
                Err("1 to 64 characters of a-z A-Z 0-9 _ . -".into())
            }
        })?),
    };
    // Without a region here, start-up looks in the profile and the instance metadata.
    let region = k.region.map(checked_region).transpose()?;
    let endpoint_url = k.endpoint_url.map(endpoint).transpose()?;
    let sts_endpoint_url = k.sts_endpoint_url.map(endpoint).transpose()?;
    let flag = |v: Option<(&'static str, String)>| match v {
        None => Ok(false),
        Some((name, v)) => parse_bool(&v).map_err(|e| invalid(name, &v, &e)),
    };
    let use_fips = flag(k.use_fips)?;
    let use_dualstack = flag(k.use_dualstack)?;
    let ca_bundle = k.ca_bundle.map(|g| PathBuf::from(g.value));
    let role_external_id = k
        .role_external_id
        .map(|g| {
            g.checked(|id| {
                if !(2..=1224).contains(&id.len()) || id.contains(char::is_whitespace) {
                    Err("2 to 1224 characters without spaces".into())
                } else {
                    Ok(())
                }
            })
        })
        .transpose()?;
    let role_arn = k
        .role_arn
        .map(|g| {
            g.checked(|a| {
                if !a.starts_with("arn:") || a.split(':').count() < 6 {
                    Err("a role ARN like arn:aws:iam::123456789012:role/NAME".into())
                } else {
                    Ok(())
                }
            })
        })
        .transpose()?;
    let role_session_name = k
        .role_session_name
        .map(|g| {
            g.checked(|n| {
                if valid_session_name(n) {
                    Ok(())
                } else {
                    Err("2 to 64 characters of letters, digits and _+=,.@-".into())
                }
            })
        })
        .transpose()?;

    Ok(KinesisConfig {
        destination,
        region,
        endpoint_url,
        sts_endpoint_url,
        use_fips,
        use_dualstack,
        ca_bundle,
        role_arn,
        role_session_name,
        role_external_id,
    })
}

/// A region name like `us-east-1`, trimmed.
fn checked_region(g: Given<String>) -> Result<String, ConfigError> {
    let r = g.value.trim().to_string();
    let ok = !r.is_empty()
        && r.len() <= 64
        && r.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(r)
    } else {
        Err(invalid(&g.name(), &r, "a region name like us-east-1"))
    }
}

fn endpoint(g: Given<String>) -> Result<String, ConfigError> {
    checked_endpoint(&g.name(), &g.value)
}

/// A stream's or delivery stream's name: 1 to `most` of a-z A-Z 0-9 _ . -.
fn valid_stream_name(s: &str, most: usize) -> bool {
    (1..=most).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

fn valid_session_name(s: &str) -> bool {
    (2..=64).contains(&s.len())
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'_' | b'+' | b'=' | b',' | b'.' | b'@' | b'-')
        })
}

/// An endpoint URL as given by `who` (an option or a variable), without a trailing `/`.
fn checked_endpoint(who: &str, u: &str) -> Result<String, ConfigError> {
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
