//! Cron schedules with a time zone. Both the classic five fields (`*/15 * * * *`) and six
//! fields with seconds (`0 */15 * * * *`) are accepted.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

/// A cron expression or time zone that does not parse.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ScheduleParseError {
    #[error("invalid cron expression `{expr}`: {reason}")]
    Cron { expr: String, reason: String },
    #[error("unknown time zone `{0}`")]
    TimeZone(String),
    #[error(
        "cron expression `{expr}` never fires (a day the month does not have, or a year gone by)"
    )]
    Never { expr: String },
}

/// A compiled schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    source: String,
    cron: cron::Schedule,
    tz: Tz,
}

/// Schedules parsed from the same expression in the same time zone fire alike.
impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source && self.tz == other.tz
    }
}

impl Schedule {
    pub fn parse(expr: &str, tz: Option<&str>) -> Result<Self, ScheduleParseError> {
        let fields = expr.split_whitespace().count();
        if !(5..=7).contains(&fields) {
            return Err(ScheduleParseError::Cron {
                expr: expr.to_string(),
                reason: format!(
                    "it has {fields} field{}; 5 (minute hour day-of-month month day-of-week) \
                     or 6 (seconds first) expected",
                    if fields == 1 { "" } else { "s" }
                ),
            });
        }
        let full = if fields == 5 {
            format!("0 {expr}")
        } else {
            expr.to_string()
        };
        let cron = cron::Schedule::from_str(&full).map_err(|e| {
            // The crate's report repeats the expression with a caret; its last line says why.
            let text = e.to_string();
            let reason = text
                .lines()
                .rev()
                .map(str::trim)
                .find(|l| !l.is_empty() && *l != "^")
                .unwrap_or("unparsable")
                .to_string();
            ScheduleParseError::Cron {
                expr: expr.to_string(),
                reason,
            }
        })?;
        let tz = match tz {
            Some(name) => name
                .parse::<Tz>()
                .map_err(|_| ScheduleParseError::TimeZone(name.to_string()))?,
            None => Tz::UTC,
        };
        // `0 0 31 2 *` (February 31st) or a year gone by parse, but never fire.
        if cron.after(&Utc::now().with_timezone(&tz)).next().is_none() {
            return Err(ScheduleParseError::Never {
                expr: expr.to_string(),
            });
        }
        Ok(Schedule {
            source: expr.to_string(),
            cron,
            tz,
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// The first firing strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .after(&t.with_timezone(&self.tz))
            .next()
            .map(|d| d.with_timezone(&Utc))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrong_number_of_fields_says_how_many() {
        let e = Schedule::parse("*/2 * * *", None).unwrap_err().to_string();
        assert_eq!(
            e,
            "invalid cron expression `*/2 * * *`: it has 4 fields; 5 (minute hour \
             day-of-month month day-of-week) or 6 (seconds first) expected"
        );
    }

    #[test]
    fn five_and_six_fields_and_time_zones() {
        let t: DateTime<Utc> = "2026-11-26T10:07:00Z".parse().unwrap();
        let s = Schedule::parse("*/15 * * * *", None).unwrap();
        assert_eq!(
            s.next_after(t).unwrap().to_rfc3339(),
            "2026-11-26T10:15:00+00:00"
        );
        let s = Schedule::parse("0 0 9 * * *", Some("Europe/Bucharest")).unwrap();
        assert_eq!(
            s.next_after(t).unwrap().to_rfc3339(),
            "2026-11-27T07:00:00+00:00"
        );
        assert!(Schedule::parse("61 * * * *", None).is_err());
        assert!(Schedule::parse("* * * * *", Some("Mars/Olympus")).is_err());
        for never in ["0 0 31 2 *", "0 0 0 30 2 *", "0 0 0 1 1 * 2020"] {
            let e = Schedule::parse(never, None).unwrap_err();
            assert!(e.to_string().contains("never fires"), "{never}: {e}");
        }
    }
}
