//! Durations as people write and read them: a number of seconds from a file or a command line
//! (checked, never a panic), and short text for messages.
//!
//! ```
//! use agenthelm::duration::{from_seconds, shown};
//! use std::time::Duration;
//!
//! assert_eq!(from_seconds(1.5), Ok(Duration::from_millis(1500)));
//! assert!(from_seconds(0.0).is_err());
//! assert!(from_seconds(1.8e19).is_err()); // would panic in Duration::from_secs_f64
//! assert_eq!(shown(Duration::from_secs(2)), "2.000s");
//! assert_eq!(shown(Duration::from_micros(100)), "100µs");
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
    fn short_durations_are_not_shown_as_zero() {
        assert_eq!(shown(Duration::from_millis(1500)), "1.500s");
        assert_eq!(shown(Duration::from_millis(50)), "0.050s");
        assert_eq!(shown(Duration::from_micros(100)), "100µs");
        assert_eq!(shown(Duration::from_nanos(1500)), "1.5µs");
        assert_eq!(shown(Duration::from_nanos(7)), "7ns");
    }
}
