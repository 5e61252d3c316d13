//! Pressure stall information (PSI): `/proc/pressure/memory` or a v2 cgroup's `memory.pressure`.
//!
//! ```text
//! some avg10=0.00 avg60=0.00 avg300=0.00 total=0
//! full avg10=0.00 avg60=0.00 avg300=0.00 total=0
//! ```
//! `some`: the share of wall time in which at least one task stalled waiting for memory (reclaim, swap-in,
//! refaults), averaged over 10 s, 60 s and 300 s, in percent; `full`: in which every non-idle task did.
//! `total`: the stall time in microseconds since boot (or since the cgroup was made).

/// One line of a PSI file.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Stall {
    pub avg10: f64,
    pub avg60: f64,
    pub avg300: f64,
    pub total_us: u64,
}

/// A PSI file: `full` is `None` where the kernel writes no full line (the system's CPU file).
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Pressure {
    pub some: Stall,
    pub full: Option<Stall>,
}

/// Parses a PSI file; `None` when it has no `some` line or a field is not a number.
pub fn parse(text: &str) -> Option<Pressure> {
    let mut some = None;
    let mut full = None;
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let slot = match words.next() {
            Some("some") => &mut some,
            Some("full") => &mut full,
            _ => continue,
        };
        let mut stall = Stall::default();
        for word in words {
            let (key, value) = word.split_once('=')?;
            match key {
                "avg10" => stall.avg10 = value.parse().ok()?,
                "avg60" => stall.avg60 = value.parse().ok()?,
                "avg300" => stall.avg300 = value.parse().ok()?,
                "total" => stall.total_us = value.parse().ok()?,
                _ => {}
            }
        }
        *slot = Some(stall);
    }
    Some(Pressure { some: some?, full })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_lines() {
        let p = parse(
            "some avg10=12.50 avg60=3.25 avg300=0.75 total=987654\n\
             full avg10=8.00 avg60=2.00 avg300=0.50 total=123456\n",
        )
        .unwrap();
        assert_eq!(p.some.avg10, 12.5);
        assert_eq!(p.some.avg60, 3.25);
        assert_eq!(p.some.avg300, 0.75);
        assert_eq!(p.some.total_us, 987654);
        assert_eq!(p.full.unwrap().avg10, 8.0);
    }

    #[test]
    fn no_full_line() {
        let p = parse("some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n").unwrap();
        assert_eq!(p.full, None);
    }

    #[test]
    fn garbage_is_none() {
        assert_eq!(parse(""), None);
        assert_eq!(parse("some avg10=x avg60=0 avg300=0 total=0\n"), None);
        assert_eq!(parse("some avg10\n"), None);
    }
}
