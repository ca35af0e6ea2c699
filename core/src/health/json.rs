//! The JSON form of a [`HealthReport`]: [`HealthReport::json`].
//!
//! Written by hand (no serializer: the core is `no_std` and the report allocates nothing), over
//! the report's public reading API (`is_ready`, `is_live`, `reasons`, `omitted`), with every
//! string escaped as RFC 8259 requires: `"` and `\` escaped, control characters
//! (U+0000..U+001F) as `\n`, `\r`, `\t`, `\b`, `\f` or `\u00XX`, and U+2028/U+2029 as `\u2028`
//! and `\u2029` (valid JSON, but line terminators to a JavaScript parser). Component names are
//! programmer-chosen `&'static str`s, not client input, but a name with a quote must still make
//! valid JSON.
//!
//! ```
//! use keel_core::health::{ComponentState, HealthReport};
//!
//! let report = HealthReport::new()
//!     .with("accept", ComponentState::accept_paused("EMFILE"))
//!     .with("shutdown", ComponentState::Healthy);
//! assert_eq!(
//!     report.json().to_string(),
//!     r#"{"ready":false,"live":true,"components":[{"name":"accept","state":"unhealthy","reason":"paused","detail":"EMFILE"}],"omitted":0}"#
//! );
//! ```
//!
//! The shape: `ready` and `live` (booleans: the verdicts), `components` (every component that
//! is not healthy, in the order added, each with `name`, `state` (`"degraded"`, `"unhealthy"`
//! or `"fatal"`), `reason` and, when known, `detail`), and `omitted` (components left out of the
//! list for want of room; they still count in the verdicts).

use core::fmt::{self, Write as _};

use super::{ComponentState, HealthReport};

/// A [`HealthReport`] as JSON (`Display`): made by [`HealthReport::json`], which has the shape.
#[derive(Clone, Copy, Debug)]
pub struct Json<'a> {
    report: &'a HealthReport,
}

impl HealthReport {
    /// The report as one JSON object: `report.json().to_string()`, or write it with `write!`
    /// into any buffer. The shape: `ready` and `live` (booleans: the verdicts), `components`
    /// (every component that is not healthy, in the order added, each with `name`, `state`
    /// (`"degraded"`, `"unhealthy"` or `"fatal"`), `reason` and, when known, `detail`), and
    /// `omitted` (components left out of the list for want of room; they still count in the
    /// verdicts). Strings are escaped as RFC 8259 requires (control characters included).
    #[must_use]
    pub fn json(&self) -> Json<'_> {
        Json { report: self }
    }
}

impl fmt::Display for Json<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = self.report;
        write!(
            f,
            r#"{{"ready":{},"live":{},"components":["#,
            r.is_ready(),
            r.is_live()
        )?;
        for (i, c) in r.reasons().enumerate() {
            if i > 0 {
                f.write_char(',')?;
            }
            f.write_str(r#"{"name":"#)?;
            string(f, c.name)?;
            let state = match c.state {
                ComponentState::Healthy => "healthy",
                ComponentState::Degraded(_) => "degraded",
                ComponentState::Unhealthy(_) => "unhealthy",
                ComponentState::Fatal(_) => "fatal",
            };
            write!(f, r#","state":"{state}""#)?;
            if let Some(reason) = c.state.reason() {
                f.write_str(r#","reason":"#)?;
                string(f, reason.what())?;
                if let Some(detail) = reason.detail() {
                    f.write_str(r#","detail":"#)?;
                    string(f, detail)?;
                }
            }
            f.write_char('}')?;
        }
        write!(f, r#"],"omitted":{}}}"#, r.omitted())
    }
}

/// Writes `s` as a JSON string, quotes included.
fn string(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    f.write_char('"')?;
    // Runs of characters that need no escape are written in one piece.
    let mut start = 0;
    for (i, ch) in s.char_indices() {
        let escaped = match ch {
            '"' => Some("\\\""),
            '\\' => Some("\\\\"),
            '\n' => Some("\\n"),
            '\r' => Some("\\r"),
            '\t' => Some("\\t"),
            '\u{8}' => Some("\\b"),
            '\u{c}' => Some("\\f"),
            '\u{2028}' => Some("\\u2028"),
            '\u{2029}' => Some("\\u2029"),
            c if (c as u32) < 0x20 => None,
            _ => continue,
        };
        f.write_str(&s[start..i])?;
        match escaped {
            Some(e) => f.write_str(e)?,
            None => write!(f, "\\u{:04x}", ch as u32)?,
        }
        start = i + ch.len_utf8();
    }
    f.write_str(&s[start..])?;
    f.write_char('"')
}

#[cfg(all(test, feature = "alloc"))]
mod tests {
    use super::*;
    use crate::health::{BreakerImpact, Reason};
    use alloc::string::{String, ToString};

    #[test]
    fn an_empty_report_is_ready_and_live() {
        assert_eq!(
            HealthReport::new().json().to_string(),
            r#"{"ready":true,"live":true,"components":[],"omitted":0}"#
        );
    }

    #[test]
    fn every_state_and_the_omitted_count() {
        let mut report = HealthReport::new()
            .with("api", ComponentState::breaker_open(BreakerImpact::Degrade))
            .with("accept", ComponentState::accept_stopped("EBADF"));
        // Fill the report to its bound (`MAX_LISTED` reasons inline); one more is counted only.
        for _ in 2..crate::health::MAX_LISTED {
            let _ = report.add("pool", ComponentState::bulkhead_saturated());
        }
        let _ = report.add("cache", ComponentState::bulkhead_saturated());
        let pool = r#"{"name":"pool","state":"unhealthy","reason":"saturated"}"#;
        let mut expected = String::from(concat!(
            r#"{"ready":false,"live":false,"components":["#,
            r#"{"name":"api","state":"degraded","reason":"open"},"#,
            r#"{"name":"accept","state":"fatal","reason":"stopped","detail":"EBADF"}"#,
        ));
        for _ in 2..crate::health::MAX_LISTED {
            expected.push(',');
            expected.push_str(pool);
        }
        expected.push_str(r#"],"omitted":1}"#);
        assert_eq!(report.json().to_string(), expected);
    }

    /// Printable ASCII, the space included, is written as it is.
    #[test]
    fn spaces_and_printable_ascii_are_not_escaped() {
        let report = HealthReport::new().with(
            "http server",
            ComponentState::Degraded(Reason::with_detail("near limit", "9 of 10 ~!")),
        );
        assert_eq!(
            report.json().to_string(),
            concat!(
                r#"{"ready":true,"live":true,"components":["#,
                r#"{"name":"http server","state":"degraded","reason":"near limit","detail":"9 of 10 ~!"}"#,
                r#"],"omitted":0}"#
            )
        );
    }

    #[test]
    fn hostile_names_are_escaped() {
        let report = HealthReport::new()
            .with(
                "a\"b\\c\nd\re\tf\u{0}g\u{1f}h\u{8}\u{c}\u{7f}é\u{2028}\u{2029}",
                ComponentState::Unhealthy(Reason::with_detail("x\"", "\u{1b}[31m")),
            )
            .with("\"},{\"name\":\"evil", ComponentState::draining());
        assert_eq!(
            report.json().to_string(),
            concat!(
                r#"{"ready":false,"live":true,"components":["#,
                r#"{"name":"a\"b\\c\nd\re\tf\u0000g\u001fh\b\f"#,
                "\u{7f}é",
                r#"\u2028\u2029","state":"unhealthy","reason":"x\"","detail":"\u001b[31m"},"#,
                r#"{"name":"\"},{\"name\":\"evil","state":"unhealthy","reason":"draining"}"#,
                r#"],"omitted":0}"#
            )
        );
    }
}
