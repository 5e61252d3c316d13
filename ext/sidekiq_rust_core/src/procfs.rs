//! Parsers for the files under `/proc/PID/` that the memory readers use.
//! Every value returned is in bytes.

/// The resident-set field (second field, in pages) of `/proc/PID/statm`.
pub fn statm_resident_pages(buf: &[u8]) -> Option<u64> {
    let mut fields = buf
        .split(|b| b.is_ascii_whitespace())
        .filter(|f| !f.is_empty());
    fields.next()?;
    parse_u64(fields.next()?)
}

fn parse_u64(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    let mut value: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        value = value.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    Some(value)
}

/// Sums of the `smaps_rollup` (or `smaps`) fields, in bytes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SmapsTotals {
    pub rss: u64,
    pub pss: u64,
    pub private_clean: u64,
    pub private_dirty: u64,
    pub swap: u64,
}

impl SmapsTotals {
    /// Unique set size: the memory only this process maps.
    pub fn uss(&self) -> u64 {
        self.private_clean + self.private_dirty
    }
}

/// Parses `/proc/PID/smaps_rollup`, or sums a whole `/proc/PID/smaps` (the same fields repeat per mapping).
pub fn parse_smaps(text: &str) -> SmapsTotals {
    let mut totals = SmapsTotals::default();
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let slot = match key {
            "Rss" => &mut totals.rss,
            "Pss" => &mut totals.pss,
            "Private_Clean" => &mut totals.private_clean,
            "Private_Dirty" => &mut totals.private_dirty,
            "Swap" => &mut totals.swap,
            _ => continue,
        };
        if let Some(bytes) = kb_value(rest) {
            *slot += bytes;
        }
    }
    totals
}

/// A `Key:   1234 kB` field of `/proc/PID/status`, in bytes.
pub fn status_field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, rest) = line.split_once(':')?;
        if k == key {
            kb_value(rest)
        } else {
            None
        }
    })
}

fn kb_value(rest: &str) -> Option<u64> {
    let mut parts = rest.split_whitespace();
    let number = parse_u64(parts.next()?.as_bytes())?;
    match parts.next() {
        Some("kB") => number.checked_mul(1024),
        None => Some(number),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statm_second_field_is_resident() {
        assert_eq!(
            statm_resident_pages(b"7466 1543 1052 278 0 567 0\n"),
            Some(1543)
        );
        assert_eq!(statm_resident_pages(b"7466"), None);
        assert_eq!(statm_resident_pages(b""), None);
        assert_eq!(statm_resident_pages(b"1 x2 3"), None);
        assert_eq!(
            statm_resident_pages(b"1 99999999999999999999999 3"),
            None,
            "overflow is not a value"
        );
    }

    const ROLLUP: &str =
        "55f0a5e1c000-7ffd3b7fe000 ---p 00000000 00:00 0                          [rollup]
Rss:               15360 kB
Pss:                9216 kB
Pss_Anon:           6144 kB
Shared_Clean:       5120 kB
Shared_Dirty:          0 kB
Private_Clean:      1024 kB
Private_Dirty:      9216 kB
Referenced:        15360 kB
Anonymous:          6144 kB
Swap:                512 kB
SwapPss:             512 kB
";

    #[test]
    fn smaps_rollup_fields() {
        let t = parse_smaps(ROLLUP);
        assert_eq!(t.rss, 15360 * 1024);
        assert_eq!(t.pss, 9216 * 1024, "Pss_Anon is not Pss");
        assert_eq!(t.uss(), (1024 + 9216) * 1024);
        assert_eq!(t.swap, 512 * 1024, "SwapPss is not Swap");
    }

    #[test]
    fn full_smaps_is_summed() {
        let smaps = "00400000-00452000 r-xp 00000000 08:02 173521 /usr/bin/ruby\n\
                     Size: 328 kB\nRss: 100 kB\nPss: 50 kB\nPrivate_Clean: 10 kB\nPrivate_Dirty: 0 kB\nSwap: 0 kB\n\
                     7f0000000000-7f0000100000 rw-p 00000000 00:00 0\n\
                     Size: 1024 kB\nRss: 200 kB\nPss: 200 kB\nPrivate_Clean: 0 kB\nPrivate_Dirty: 200 kB\nSwap: 4 kB\n";
        let t = parse_smaps(smaps);
        assert_eq!(t.rss, 300 * 1024);
        assert_eq!(t.pss, 250 * 1024);
        assert_eq!(t.uss(), 210 * 1024);
        assert_eq!(t.swap, 4 * 1024);
    }

    #[test]
    fn status_fields() {
        let status =
            "Name:\truby\nVmPeak:\t  300000 kB\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\n";
        assert_eq!(status_field(status, "VmHWM"), Some(20480 * 1024));
        assert_eq!(status_field(status, "VmRSS"), Some(10240 * 1024));
        assert_eq!(status_field(status, "VmSwap"), None);
        assert_eq!(status_field("VmHWM:\tbogus kB\n", "VmHWM"), None);
    }
}
