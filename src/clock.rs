//! The launcher's wall clock. `reconcile` never reads it: the loop and the services read it here
//! and pass the reading in, and tests pass their own. Also how a time is written for people and
//! read back: RFC 3339 in UTC with milliseconds (`2026-12-01T10:00:00.123Z`), as the log markers
//! and `logs --timestamps` show it.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::reconcile::UnixMillis;

/// A clock handed to the parts that stamp times (`status`, metrics, waits), so tests can fix it.
pub type Clock = Arc<dyn Fn() -> UnixMillis + Send + Sync>;

/// The system clock as a `Clock`.
pub fn system_clock() -> Clock {
    Arc::new(now)
}

/// The current time in Unix milliseconds (0 before 1970, which no host lives in).
pub fn now() -> UnixMillis {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    UnixMillis(u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX))
}

/// `at` as RFC 3339 in UTC with milliseconds: `2026-12-01T10:00:00.123Z`.
pub fn rfc3339(at: UnixMillis) -> String {
    let millis = at.0 % 1000;
    let seconds = at.0 / 1000;
    let (days, of_day) = (seconds / 86_400, seconds % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60
    )
}

/// The time `rfc3339` wrote (the fraction may have any number of digits, or none); `None` for
/// any other text, an offset other than `Z` included.
pub fn parse_rfc3339(text: &str) -> Option<UnixMillis> {
    let text = text.strip_suffix('Z')?;
    let (date, time) = text.split_once('T')?;
    let mut date_parts = date.splitn(3, '-');
    let year: u64 = digits(date_parts.next()?, 4)?;
    let month: u64 = digits(date_parts.next()?, 2)?;
    let day: u64 = digits(date_parts.next()?, 2)?;
    let (clock, fraction) = time.split_once('.').unwrap_or((time, ""));
    let mut clock_parts = clock.splitn(3, ':');
    let hour: u64 = digits(clock_parts.next()?, 2)?;
    let minute: u64 = digits(clock_parts.next()?, 2)?;
    let second: u64 = digits(clock_parts.next()?, 2)?;
    if year < 1970 || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    if !fraction.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    // Milliseconds: the first three digits of the fraction, padded.
    let millis = fraction
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(3)
        .fold(0u64, |total, digit| total * 10 + u64::from(digit - b'0'));
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second;
    Some(UnixMillis(seconds.checked_mul(1000)?.checked_add(millis)?))
}

/// Exactly `count` ASCII digits, as a number.
fn digits(text: &str, count: usize) -> Option<u64> {
    (text.len() == count && text.bytes().all(|byte| byte.is_ascii_digit()))
        .then(|| text.parse().ok())
        .flatten()
}

/// Year, month and day of the `days`-th day after 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, for days on or after the epoch).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// Days from 1970-01-01 to `year-month-day` (Howard Hinnant's `days_from_civil`), for dates
/// on or after the epoch.
fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year / 400;
    let year_of_era = year % 400;
    let shifted_month = if month > 2 { month - 3 } else { month + 9 };
    let day_of_year = (153 * shifted_month + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    (era * 146_097 + day_of_era).saturating_sub(719_468)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_written_in_rfc_3339_and_read_back() {
        for (millis, text) in [
            (0, "1970-01-01T00:00:00.000Z"),
            (951_782_400_000, "2000-02-29T00:00:00.000Z"),
            (1_796_121_599_999, "2026-12-01T10:39:59.999Z"),
            (4_102_444_800_001, "2100-01-01T00:00:00.001Z"),
        ] {
            assert_eq!(rfc3339(UnixMillis(millis)), text);
            assert_eq!(parse_rfc3339(text), Some(UnixMillis(millis)), "{text}");
        }
        assert_eq!(
            parse_rfc3339("2026-12-01T10:39:59Z"),
            Some(UnixMillis(1_796_121_599_000))
        );
        assert_eq!(
            parse_rfc3339("2026-12-01T10:39:59.5Z"),
            Some(UnixMillis(1_796_121_599_500))
        );
        for bad in [
            "",
            "2026-12-01T10:39:59.999",
            "2026-12-01T10:39:59+01:00",
            "2026-13-01T10:39:59Z",
            "2026-12-01 10:39:59Z",
            "2026-12-01T24:00:00Z",
            "1969-12-31T23:59:59Z",
            "2026-12-01T10:39:59.9x9Z",
            "+026-12-01T10:39:59Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad:?}");
        }
    }
}
