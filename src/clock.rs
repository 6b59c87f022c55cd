//! Wall-clock formatting in UTC without a date crate.
//!
//! Log lines carry RFC 3339 timestamps and failed-attempt files carry `YYYYMMDDhhmmss` in their
//! names. Both come from [`UtcDateTime`], a plain civil-calendar breakdown of a `SystemTime`
//! (proleptic Gregorian calendar, valid for any time after 1970).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A moment broken down into UTC calendar fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UtcDateTime {
    /// Year, e.g. 2026.
    pub year: i64,
    /// Month, 1..=12.
    pub month: u32,
    /// Day of the month, 1..=31.
    pub day: u32,
    /// Hour, 0..=23.
    pub hour: u32,
    /// Minute, 0..=59.
    pub minute: u32,
    /// Second, 0..=59.
    pub second: u32,
    /// Milliseconds, 0..=999.
    pub millis: u32,
}

impl UtcDateTime {
    /// Breaks `t` down; times before 1970 are clamped to the epoch.
    pub fn from_system(t: SystemTime) -> Self {
        let since = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
        Self::from_unix(since.as_secs() as i64, since.subsec_millis())
    }

    /// Breaks down `secs` seconds after the Unix epoch.
    pub fn from_unix(secs: i64, millis: u32) -> Self {
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400) as u32;
        // Howard Hinnant's days-to-civil algorithm.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = yoe + era * 400 + i64::from(month <= 2);
        UtcDateTime {
            year,
            month,
            day,
            hour: rem / 3600,
            minute: rem / 60 % 60,
            second: rem % 60,
            millis,
        }
    }

    /// `2026-11-25T21:59:57.123Z`.
    pub fn rfc3339_millis(&self) -> String {
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            self.year, self.month, self.day, self.hour, self.minute, self.second, self.millis
        )
    }

    /// `20261125215957`, the form used in failed-attempt file names.
    pub fn compact(&self) -> String {
        format!(
            "{:04}{:02}{:02}{:02}{:02}{:02}",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_and_known_dates() {
        assert_eq!(
            UtcDateTime::from_unix(0, 0).rfc3339_millis(),
            "1970-01-01T00:00:00.000Z"
        );
        // 2000-02-29 (leap day in a century leap year) 12:34:56 UTC.
        assert_eq!(
            UtcDateTime::from_unix(951_827_696, 7).rfc3339_millis(),
            "2000-02-29T12:34:56.007Z"
        );
        // 2015-08-30T12:36:00Z, the SigV4 vector's time.
        assert_eq!(
            UtcDateTime::from_unix(1_440_938_160, 0).compact(),
            "20150830123600"
        );
        // 2100-03-01 (2100 is not a leap year).
        assert_eq!(
            UtcDateTime::from_unix(4_107_542_400, 0).compact(),
            "21000301000000"
        );
    }
}
