//! Go-style durations (`30s`, `5m`, `1h30m`, `720h`) as they appear in specs.
//!
//! The CRD schema checks the same shape with [`DURATION_PATTERN`] at apply time;
//! [`parse`] turns an accepted string into a `std::time::Duration`.

use std::time::Duration;

/// The regular expression the CRD uses for every duration field. Kept beside the
/// parser so a unit test can hold the two to the same examples.
pub const DURATION_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$";

/// What a person sees when a duration is malformed.
pub const DURATION_MESSAGE: &str =
    "must be a duration such as 30s, 5m, 1h30m or 720h (units: ns, us, ms, s, m, h)";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid duration {input:?}: {DURATION_MESSAGE}")]
pub struct ParseDurationError {
    pub input: String,
}

/// Parse a positive Go-style duration. Signs are refused: no Baton timeout or TTL
/// can be negative.
pub fn parse(input: &str) -> Result<Duration, ParseDurationError> {
    let err = || ParseDurationError {
        input: input.to_owned(),
    };
    if input.is_empty() {
        return Err(err());
    }
    let mut total = 0f64;
    let mut rest = input;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(err)?;
        let (num, tail) = rest.split_at(num_len);
        if num.is_empty()
            || num.starts_with('.')
            || num.ends_with('.')
            || num.matches('.').count() > 1
        {
            return Err(err());
        }
        let value: f64 = num.parse().map_err(|_| err())?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_len);
        let seconds = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(err()),
        };
        total += value * seconds;
        rest = next;
    }
    if !total.is_finite() || total > u64::MAX as f64 {
        return Err(err());
    }
    Ok(Duration::from_secs_f64(total))
}

/// Format a duration the way the specs write them (`1h2m3s`, `150ms`).
pub fn format(d: Duration) -> String {
    let total_ms = d.as_millis();
    if total_ms < 1000 {
        return format!("{total_ms}ms");
    }
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 || out.is_empty() {
        out.push_str(&format!("{s}s"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        let cases = [
            ("30s", 30_000),
            ("5m", 300_000),
            ("1h30m", 5_400_000),
            ("720h", 2_592_000_000),
            ("1.5s", 1_500),
            ("250ms", 250),
            ("1m0s", 60_000),
        ];
        for (input, millis) in cases {
            assert_eq!(parse(input).map(|d| d.as_millis()), Ok(millis), "{input}");
        }
    }

    #[test]
    fn refuses_malformed_durations() {
        for input in [
            "", "30", "s", "-5s", "5 m", "1d", "1.s", ".5s", "1..5s", "5sm", "h1",
        ] {
            assert!(parse(input).is_err(), "{input:?} should be refused");
        }
    }

    #[test]
    fn formats_round_trip() {
        for input in ["1h2m3s", "150ms", "45s", "2h"] {
            assert_eq!(format(parse(input).unwrap_or_default()), input);
        }
    }
}
