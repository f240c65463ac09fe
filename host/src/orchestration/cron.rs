//! Five-field cron expressions, evaluated in an IANA time zone.
//!
//! `minute hour day-of-month month day-of-week`, each a `*`, a value, a
//! range `a-b`, a step `*/n`, `a-b/n` or `a/n`, or a comma list of those.
//! Months and weekdays also take names (`jan`, `mon`); Sunday is 0 or 7. The
//! macros `@hourly`, `@daily` (`@midnight`), `@weekly`, `@monthly` and
//! `@yearly` (`@annually`) stand for their usual expressions. As in Vixie
//! cron, when both day fields are restricted a day matches either of them;
//! when one is `*` (or starts with `*`), both must match.
//!
//! Daylight-saving time (the defined behaviour, tested):
//! - **Gap** (spring forward): a local time that does not exist that day
//!   runs once, at the instant it would have been with the offset before the
//!   change; `02:30` on a day the clocks jump from 02:00 to 03:00 runs at
//!   03:30 local time. (RFC 5545 and Temporal's `compatible`.)
//! - **Fold** (fall back): a local time that happens twice runs once, at the
//!   first (earlier) occurrence.

use std::fmt;

use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

/// One of the five fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CronField {
    /// Minute, 0–59.
    Minute,
    /// Hour, 0–23.
    Hour,
    /// Day of the month, 1–31.
    DayOfMonth,
    /// Month, 1–12 or `jan`–`dec`.
    Month,
    /// Day of the week, 0–7 (0 and 7 are Sunday) or `sun`–`sat`.
    DayOfWeek,
}

impl CronField {
    const ALL: [Self; 5] = [
        Self::Minute,
        Self::Hour,
        Self::DayOfMonth,
        Self::Month,
        Self::DayOfWeek,
    ];

    fn range(self) -> (u8, u8) {
        match self {
            Self::Minute => (0, 59),
            Self::Hour => (0, 23),
            Self::DayOfMonth => (1, 31),
            Self::Month => (1, 12),
            Self::DayOfWeek => (0, 7),
        }
    }

    fn names(self) -> &'static [&'static str] {
        match self {
            Self::Month => &[
                "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
            ],
            Self::DayOfWeek => &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
            _ => &[],
        }
    }
}

impl fmt::Display for CronField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Minute => "minute",
            Self::Hour => "hour",
            Self::DayOfMonth => "day-of-month",
            Self::Month => "month",
            Self::DayOfWeek => "day-of-week",
        })
    }
}

/// A cron expression that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CronError {
    /// Not five fields.
    #[error(
        "cron expression `{expression}` has {found} fields; it needs 5 (minute hour day-of-month month day-of-week)"
    )]
    FieldCount {
        /// The expression.
        expression: String,
        /// How many fields it has.
        found: usize,
    },
    /// One field is malformed or out of range.
    #[error("cron {field} field `{value}`: {reason}")]
    Field {
        /// Which field.
        field: CronField,
        /// Its text.
        value: String,
        /// What is wrong.
        reason: String,
    },
    /// An unknown `@` macro.
    #[error("unknown cron macro `{0}` (use @hourly, @daily, @weekly, @monthly or @yearly)")]
    Macro(String),
    /// It is well formed but matches no date (such as `0 0 30 2 *`).
    #[error("cron expression `{0}` never fires")]
    NeverFires(String),
}

/// A parsed cron expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    source: String,
    minutes: u64,
    hours: u32,
    days: u32,
    months: u16,
    weekdays: u8,
    /// Either day field was `*…`: both must match (else either).
    day_and: bool,
}

/// The longest search for a matching date, in years (a 29 February falls
/// at most eight years apart).
const SEARCH_YEARS: i16 = 9;

impl Cron {
    /// Parses an expression; the error names the field that is wrong.
    pub fn parse(expression: &str) -> Result<Self, CronError> {
        let trimmed = expression.trim();
        let expanded = match trimmed {
            "@hourly" => "0 * * * *",
            "@daily" | "@midnight" => "0 0 * * *",
            "@weekly" => "0 0 * * 0",
            "@monthly" => "0 0 1 * *",
            "@yearly" | "@annually" => "0 0 1 1 *",
            other if other.starts_with('@') => return Err(CronError::Macro(other.to_owned())),
            other => other,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(CronError::FieldCount {
                expression: expression.to_owned(),
                found: fields.len(),
            });
        }
        let mut sets = [0u64; 5];
        for (i, field) in CronField::ALL.into_iter().enumerate() {
            sets[i] = parse_field(field, fields[i])?;
        }
        // Sunday is 0 and 7.
        let weekdays = (sets[4] | (sets[4] >> 7)) as u8 & 0x7f;
        Ok(Self {
            source: trimmed.to_owned(),
            minutes: sets[0],
            hours: sets[1] as u32,
            days: sets[2] as u32,
            months: sets[3] as u16,
            weekdays,
            day_and: fields[2].starts_with('*') || fields[4].starts_with('*'),
        })
    }

    /// The expression as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The first run strictly after `after`, in `zone`; `None` if it never
    /// fires within nine years.
    pub fn next_after(&self, zone: &TimeZone, after: Timestamp) -> Option<Timestamp> {
        let local = after.to_zoned_datetime(zone.clone()).datetime();
        let mut from = local
            .with()
            .second(0)
            .subsec_nanosecond(0)
            .build()
            .ok()?
            .checked_add(1.minute())
            .ok()?;
        let limit = local.year().saturating_add(SEARCH_YEARS);
        loop {
            let civil = self.next_civil(from, limit)?;
            // Gap: the offset before the change; fold: the earlier instant.
            let at = zone.to_ambiguous_timestamp(civil).compatible().ok()?;
            if at > after {
                return Some(at);
            }
            from = civil.checked_add(1.minute()).ok()?;
        }
    }

    /// The first civil date-time at or after `from` the fields match.
    fn next_civil(&self, mut from: DateTime, limit: i16) -> Option<DateTime> {
        loop {
            if from.year() > limit {
                return None;
            }
            let date = from.date();
            if self.months & (1 << from.month()) == 0 {
                from = date
                    .first_of_month()
                    .checked_add(1.month())
                    .ok()?
                    .at(0, 0, 0, 0);
                continue;
            }
            if !self.day_matches(date) {
                from = date.tomorrow().ok()?.at(0, 0, 0, 0);
                continue;
            }
            let hour = from.hour() as u32;
            match next_bit(u64::from(self.hours), hour) {
                None => {
                    from = date.tomorrow().ok()?.at(0, 0, 0, 0);
                    continue;
                }
                Some(h) if h != hour => {
                    from = date.at(h as i8, 0, 0, 0);
                    continue;
                }
                Some(_) => {}
            }
            match next_bit(self.minutes, from.minute() as u32) {
                Some(m) => return Some(date.at(from.hour(), m as i8, 0, 0)),
                None => {
                    from = date.at(from.hour(), 0, 0, 0).checked_add(1.hour()).ok()?;
                }
            }
        }
    }

    fn day_matches(&self, date: Date) -> bool {
        let day = self.days & (1 << date.day()) != 0;
        let weekday = self.weekdays & (1 << date.weekday().to_sunday_zero_offset()) != 0;
        if self.day_and {
            day && weekday
        } else {
            day || weekday
        }
    }
}

impl fmt::Display for Cron {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// The lowest set bit at or above `from`.
fn next_bit(set: u64, from: u32) -> Option<u32> {
    if from >= 64 {
        return None;
    }
    let rest = set >> from;
    (rest != 0).then(|| from + rest.trailing_zeros())
}

fn parse_field(field: CronField, text: &str) -> Result<u64, CronError> {
    let error = |reason: String| CronError::Field {
        field,
        value: text.to_owned(),
        reason,
    };
    let (min, max) = field.range();
    let mut set = 0u64;
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((range, step)) => {
                let step: u8 = step
                    .parse()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| error(format!("step `{step}` is not a positive number")))?;
                (range, Some(step))
            }
            None => (part, None),
        };
        let (low, high) = if range == "*" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            let (a, b) = (value(field, a, &error)?, value(field, b, &error)?);
            if a > b {
                return Err(error(format!("range {a}-{b} runs backwards")));
            }
            (a, b)
        } else {
            let a = value(field, range, &error)?;
            // `a/n` means from a to the end, stepping n.
            (a, if step.is_some() { max } else { a })
        };
        let step = step.unwrap_or(1);
        let mut v = low;
        while v <= high {
            set |= 1 << v;
            v = match v.checked_add(step) {
                Some(next) => next,
                None => break,
            };
        }
    }
    Ok(set)
}

fn value(
    field: CronField,
    text: &str,
    error: &dyn Fn(String) -> CronError,
) -> Result<u8, CronError> {
    let (min, max) = field.range();
    let lower = text.to_ascii_lowercase();
    if let Some(i) = field.names().iter().position(|n| *n == lower) {
        let offset = if field == CronField::Month { 1 } else { 0 };
        return Ok(i as u8 + offset);
    }
    let n: u8 = text.parse().map_err(|_| {
        if text.is_empty() {
            error("a value is missing".into())
        } else {
            error(format!("`{text}` is not a number"))
        }
    })?;
    if n < min || n > max {
        return Err(error(format!("{n} is out of range {min}-{max}")));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone(name: &str) -> TimeZone {
        TimeZone::get(name).expect("zone")
    }

    fn at(text: &str) -> Timestamp {
        text.parse().expect("timestamp")
    }

    fn next(cron: &str, zone_name: &str, after: &str) -> String {
        Cron::parse(cron)
            .expect("parse")
            .next_after(&zone(zone_name), at(after))
            .expect("fires")
            .to_zoned_datetime(zone(zone_name))
            .to_string()
    }

    #[test]
    fn errors_name_the_field() {
        let err = Cron::parse("0 25 * * *").unwrap_err();
        assert_eq!(
            err.to_string(),
            "cron hour field `25`: 25 is out of range 0-23"
        );
        let err = Cron::parse("0 9 * foo *").unwrap_err();
        assert!(
            matches!(
                err,
                CronError::Field {
                    field: CronField::Month,
                    ..
                }
            ),
            "{err}"
        );
        let err = Cron::parse("*/0 * * * *").unwrap_err();
        assert!(
            matches!(
                err,
                CronError::Field {
                    field: CronField::Minute,
                    ..
                }
            ),
            "{err}"
        );
        let err = Cron::parse("0 9 5-1 * *").unwrap_err();
        assert!(err.to_string().contains("day-of-month"), "{err}");
        assert!(matches!(
            Cron::parse("0 9 * *"),
            Err(CronError::FieldCount { found: 4, .. })
        ));
        assert!(matches!(Cron::parse("@often"), Err(CronError::Macro(_))));
    }

    #[test]
    fn lists_ranges_steps_and_names() {
        let c = Cron::parse("0,30 8-10/2 * JAN-mar mon-fri").unwrap();
        assert_eq!(c.minutes, 1 | 1 << 30);
        assert_eq!(c.hours, 1 << 8 | 1 << 10);
        assert_eq!(c.months, 0b1110);
        assert_eq!(c.weekdays, 0b0111110);
        assert_eq!(Cron::parse("0 0 * * 7").unwrap().weekdays, 1);
        assert_eq!(
            Cron::parse("5/20 * * * *").unwrap().minutes,
            1 << 5 | 1 << 25 | 1 << 45
        );
    }

    #[test]
    fn next_in_utc_and_day_semantics() {
        assert_eq!(
            next("0 9 * * *", "UTC", "2026-11-25T09:00:00Z"),
            "2026-11-26T09:00:00+00:00[UTC]"
        );
        // Both day fields restricted: either matches (the 1st, or a Monday).
        assert_eq!(
            next("0 0 1 * mon", "UTC", "2026-11-25T00:00:00Z"),
            "2026-11-30T00:00:00+00:00[UTC]"
        );
        assert_eq!(
            next("0 0 13 * 5", "UTC", "2026-01-01T00:00:00Z"),
            "2026-01-02T00:00:00+00:00[UTC]"
        );
        // One is `*…`: both must match (a Friday on the 1st, 11th, 21st or 31st).
        assert_eq!(
            next("0 0 */10 * 5", "UTC", "2026-11-25T00:00:00Z"),
            "2026-12-11T00:00:00+00:00[UTC]"
        );
        assert_eq!(
            next("0 12 29 2 *", "UTC", "2026-03-01T00:00:00Z"),
            "2028-02-29T12:00:00+00:00[UTC]"
        );
        assert!(
            matches!(Cron::parse("0 0 30 2 *"), Ok(c) if c.next_after(&TimeZone::UTC, at("2026-01-01T00:00:00Z")).is_none())
        );
    }

    #[test]
    fn local_time_in_a_zone() {
        assert_eq!(
            next("0 9 * * *", "Europe/Berlin", "2026-11-25T08:30:00Z"),
            "2026-11-26T09:00:00+01:00[Europe/Berlin]"
        );
    }

    #[test]
    fn spring_forward_gap_runs_once_an_hour_later() {
        // New York, 8 March 2026: 02:00 EST jumps to 03:00 EDT.
        assert_eq!(
            next("30 2 * * *", "America/New_York", "2026-03-08T05:00:00Z"),
            "2026-03-08T03:30:00-04:00[America/New_York]"
        );
        // The day after, 02:30 exists again.
        assert_eq!(
            next("30 2 * * *", "America/New_York", "2026-03-08T07:30:00Z"),
            "2026-03-09T02:30:00-04:00[America/New_York]"
        );
        // An hourly run does not fire twice at 03:30.
        let c = Cron::parse("30 * * * *").unwrap();
        let ny = zone("America/New_York");
        let mut t = at("2026-03-08T06:00:00Z");
        let mut seen = Vec::new();
        for _ in 0..3 {
            t = c.next_after(&ny, t).unwrap();
            seen.push(t.to_zoned_datetime(ny.clone()).time().to_string());
        }
        assert_eq!(seen, ["01:30:00", "03:30:00", "04:30:00"]);
    }

    #[test]
    fn fall_back_fold_runs_once_at_the_first() {
        // New York, 1 November 2026: 02:00 EDT falls back to 01:00 EST.
        let first = next("30 1 * * *", "America/New_York", "2026-11-01T04:00:00Z");
        assert_eq!(first, "2026-11-01T01:30:00-04:00[America/New_York]");
        // After the first 01:30, the second one (EST) does not fire.
        assert_eq!(
            next("30 1 * * *", "America/New_York", "2026-11-01T05:30:00Z"),
            "2026-11-02T01:30:00-05:00[America/New_York]"
        );
        // Even when looking from inside the repeated hour.
        assert_eq!(
            next("30 1 * * *", "America/New_York", "2026-11-01T06:10:00Z"),
            "2026-11-02T01:30:00-05:00[America/New_York]"
        );
    }
}
