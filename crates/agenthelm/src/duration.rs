//! Durations as people write and read them: a number of seconds from a file or a command line
//! (checked, never a panic), and short text for messages.
//!
//! ```
//! use agenthelm::duration::{from_seconds, parse, shown, written};
//! use std::time::Duration;
//!
//! assert_eq!(from_seconds(1.5), Ok(Duration::from_millis(1500)));
//! assert!(from_seconds(0.0).is_err());
//! assert!(from_seconds(1.8e19).is_err()); // would panic in Duration::from_secs_f64
//! assert_eq!(shown(Duration::from_secs(2)), "2.000s");
//! assert_eq!(shown(Duration::from_micros(100)), "100µs");
//! assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1500)));
//! assert_eq!(written(Duration::from_secs(600)), "10m");
//! ```

use std::time::Duration;

/// The longest duration a file or an option may give, in seconds: about 31 years, far beyond any
/// sensible timeout, and well inside what `Duration` and the clocks can add to the current time.
pub const MAX_SECONDS: f64 = 1e9;

/// Why a number is not a duration in seconds.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum SecondsError {
    /// Zero, negative or not a number.
    #[error("expected a positive number of seconds, got {0}")]
    NotPositive(f64),
    /// More than [`MAX_SECONDS`] (infinity included).
    #[error(
        "expected a positive number of seconds up to {MAX_SECONDS:e} (about 31 years), got {0:e}"
    )]
    TooLarge(f64),
}

/// The duration of `secs` seconds, when it is positive and at most [`MAX_SECONDS`].
pub fn from_seconds(secs: f64) -> Result<Duration, SecondsError> {
    if secs.is_nan() || secs <= 0.0 {
        return Err(SecondsError::NotPositive(secs));
    }
    if secs > MAX_SECONDS {
        return Err(SecondsError::TooLarge(secs));
    }
    Duration::try_from_secs_f64(secs).map_err(|_| SecondsError::TooLarge(secs))
}

/// A duration for messages: seconds with three decimals, or microseconds (nanoseconds) below a
/// millisecond, where three decimals of a second would read as zero.
pub fn shown(duration: Duration) -> String {
    if duration >= Duration::from_millis(1) {
        format!("{:.3}s", duration.as_secs_f64())
    } else if duration >= Duration::from_micros(1) {
        let micros = duration.as_nanos() as f64 / 1e3;
        format!("{}µs", trimmed(micros))
    } else {
        format!("{}ns", duration.as_nanos())
    }
}

/// Reads a duration written with a unit: `250ms`, `90s`, `1.5s`, `10m`, `2h`, `1d`. The number
/// must be positive and the result at most [`MAX_SECONDS`].
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let scale = match unit {
        "ms" => 1e-3,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        _ => {
            return Err(format!(
                "`{text}` is not a duration: write a number and a unit, like 90s, 1.5s, 10m, 2h (units: ms, s, m, h, d)"
            ))
        }
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a duration: `{number}` is not a number"))?;
    from_seconds(value * scale).map_err(|e| format!("`{text}`: {e}"))
}

/// A duration the way [`parse`] reads it: in the largest unit that keeps it whole (`10m`, `90s`,
/// `1500ms`), so a value read and written again is unchanged.
pub fn written(duration: Duration) -> String {
    let ms = duration.as_millis();
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
    ] {
        if ms >= size && ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    if duration.subsec_nanos().is_multiple_of(1_000_000) {
        format!("{ms}ms")
    } else {
        format!("{}s", duration.as_secs_f64())
    }
}

/// Up to three decimals, without trailing zeros.
fn trimmed(value: f64) -> String {
    let text = format!("{value:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_out_of_range_are_errors() {
        assert_eq!(from_seconds(0.25), Ok(Duration::from_millis(250)));
        assert_eq!(
            from_seconds(MAX_SECONDS),
            Ok(Duration::from_secs(1_000_000_000))
        );
        for bad in [0.0, -1.0, f64::NAN] {
            assert!(matches!(
                from_seconds(bad),
                Err(SecondsError::NotPositive(_))
            ));
        }
        for bad in [1.8e19, f64::INFINITY, MAX_SECONDS * 1.01] {
            assert!(matches!(from_seconds(bad), Err(SecondsError::TooLarge(_))));
        }
        assert_eq!(
            from_seconds(1.8e19).unwrap_err().to_string(),
            "expected a positive number of seconds up to 1e9 (about 31 years), got 1.8e19"
        );
    }

    #[test]
    fn durations_are_read_with_their_unit_and_written_back_the_same() {
        for (text, ms) in [
            ("90s", 90_000),
            ("1.5s", 1500),
            ("10m", 600_000),
            ("2h", 7_200_000),
        ] {
            let duration = parse(text).unwrap();
            assert_eq!(duration, Duration::from_millis(ms), "{text}");
            assert_eq!(parse(&written(duration)), Ok(duration));
        }
        assert_eq!(parse(" 250ms "), Ok(Duration::from_millis(250)));
        assert_eq!(written(Duration::from_millis(1500)), "1500ms");
        assert_eq!(written(Duration::from_secs(90)), "90s");
        for bad in ["10", "10 minutes", "m", "-5s", "0s", "1e12h", "", "1.5.2s"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert!(parse("10y").unwrap_err().contains("units: ms, s, m, h, d"));
    }

    #[test]
    fn short_durations_are_not_shown_as_zero() {
        assert_eq!(shown(Duration::from_millis(1500)), "1.500s");
        assert_eq!(shown(Duration::from_millis(50)), "0.050s");
        assert_eq!(shown(Duration::from_micros(100)), "100µs");
        assert_eq!(shown(Duration::from_nanos(1500)), "1.5µs");
        assert_eq!(shown(Duration::from_nanos(7)), "7ns");
    }
}
