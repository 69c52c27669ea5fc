//! Dates and durations as people read them.

/// `ms` since the Unix epoch as `YYYY-MM-DD HH:MM:SS.mmm UTC`.
pub(crate) fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:03} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

/// A duration in the largest unit that keeps it short: `850 µs`, `12.3 ms`, `4.20 s`, `3m 05s`.
pub(crate) fn duration(ms: f64) -> String {
    if !ms.is_finite() || ms < 0.0 {
        return "–".to_owned();
    }
    if ms < 1.0 {
        format!("{:.0} µs", ms * 1000.0)
    } else if ms < 1000.0 {
        format!("{ms:.1} ms")
    } else if ms < 60_000.0 {
        format!("{:.2} s", ms / 1000.0)
    } else {
        let secs = (ms / 1000.0).round() as u64;
        format!("{}m {:02}s", secs / 60, secs % 60)
    }
}

// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's well-known algorithm:
// shift the year to start in March so the leap day comes last).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00.000 UTC");
        // 2024-02-29 12:34:56.789 UTC, a leap day.
        assert_eq!(utc(1_709_210_096_789), "2024-02-29 12:34:56.789 UTC");
        assert_eq!(utc(1_798_675_200_000), "2026-12-31 00:00:00.000 UTC");
    }

    #[test]
    fn picks_a_readable_unit() {
        assert_eq!(duration(0.25), "250 µs");
        assert_eq!(duration(12.34), "12.3 ms");
        assert_eq!(duration(4200.0), "4.20 s");
        assert_eq!(duration(185_000.0), "3m 05s");
        assert_eq!(duration(f64::NAN), "–");
    }
}
