//! Durations on the command line: `30s`, `1m30s`, `500ms`, `1.5s`, `2h`,
//! `1d`; a bare number is seconds, as with timeout(1).

use std::time::Duration;

/// Parses a duration: numbers (decimals allowed), each followed by a unit
/// (`ms`, `s`, `m`, `h`, `d`), added up; or one bare number of seconds.
pub(crate) fn parse(text: &str) -> Result<Duration, String> {
    let invalid = || format!("{text:?} is not a duration: write 30s, 1m30s, 500ms, 1.5s or 2h");
    let text = text.trim();
    if text.is_empty() {
        return Err(invalid());
    }
    if let Ok(seconds) = text.parse::<f64>() {
        return seconds_of(seconds, 1.0).ok_or_else(invalid);
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(invalid)?;
        let (number, after) = rest.split_at(number_end);
        let unit_end = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_end);
        let scale = match unit {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            _ => return Err(invalid()),
        };
        let value: f64 = number.parse().map_err(|_| invalid())?;
        total += seconds_of(value, scale).ok_or_else(invalid)?;
        rest = next;
    }
    Ok(total)
}

fn seconds_of(value: f64, scale: f64) -> Option<Duration> {
    Duration::try_from_secs_f64(value * scale).ok()
}

#[cfg(test)]
mod tests {
    use super::parse;
    use std::time::Duration;

    #[test]
    fn parses_what_timeout_and_the_attribute_take() {
        assert_eq!(parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
        for bad in ["", "s", "10x", "-1s", "1s2", "abc", "1..5s"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
