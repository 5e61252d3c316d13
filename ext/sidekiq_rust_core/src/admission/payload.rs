//! What admission needs of a job's payload (Sidekiq's JSON, as the fetcher popped it): its class (the wrapped
//! class of an ActiveJob), its jid and the memory it declares (`sidekiq_options memory: "150MB"`, which Sidekiq's
//! client merges into the payload, an ActiveJob class's included). Only the top-level keys are read: a scan
//! that skips every value it does not need (an argument named "class" is never taken for the job's), with no
//! allocation but the three strings.

/// The memory a job declares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Declared {
    None,
    Bytes(u64),
    /// A value that is not a size: what it was, as written (the class is told once, the job runs undeclared).
    Bad(String),
}

/// The facts admission reads from a payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobFacts {
    pub class: String,
    pub jid: String,
    pub declared: Declared,
}

/// The payload's facts; None when it is not a JSON object with a string "class" (Sidekiq fails such a job
/// itself: admission lets it through).
pub fn job_facts(payload: &[u8]) -> Option<JobFacts> {
    let mut s = Scanner { b: payload, i: 0 };
    s.ws();
    s.eat(b'{')?;
    let (mut class, mut wrapped, mut jid, mut declared) = (None, None, None, Declared::None);
    s.ws();
    if s.peek() == Some(b'}') {
        return None;
    }
    loop {
        s.ws();
        let key = s.string()?;
        s.ws();
        s.eat(b':')?;
        s.ws();
        match key.as_str() {
            "class" => class = s.string_value()?,
            "wrapped" => wrapped = s.string_value()?,
            "jid" => jid = s.string_value()?,
            "memory" => declared = s.declared()?,
            _ => s.skip_value()?,
        }
        s.ws();
        match s.next()? {
            b',' => continue,
            b'}' => break,
            _ => return None,
        }
    }
    Some(JobFacts {
        class: wrapped.or(class)?,
        jid: jid.unwrap_or_default(),
        declared,
    })
}

/// A size as the gem's options take it: a number of megabytes, or a number with a unit ("150MB", "1.5GB",
/// "800M", "512KiB", "100B"). None for anything else, and for zero.
pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    if number.is_empty() || number.starts_with('.') || number.ends_with('.') {
        return None;
    }
    let value: f64 = number.parse().ok()?;
    let unit = unit.trim().to_ascii_uppercase();
    let unit = unit
        .strip_suffix("IB")
        .or_else(|| unit.strip_suffix('B'))
        .unwrap_or(&unit);
    let scale: f64 = match unit {
        "" if text.ends_with(['b', 'B']) => 1.0,
        "" => 1024.0 * 1024.0,
        "K" => 1024.0,
        "M" => 1024.0 * 1024.0,
        "G" => 1024.0 * 1024.0 * 1024.0,
        "T" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    let bytes = (value * scale).floor();
    (bytes >= 1.0 && bytes < u64::MAX as f64).then_some(bytes as u64)
}

struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
}

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.i += 1;
        Some(c)
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.next()? == c).then_some(())
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    /// A JSON string, unescaped (\uXXXX outside the BMP's surrogates only; a lone surrogate is U+FFFD).
    fn string(&mut self) -> Option<String> {
        self.eat(b'"')?;
        let mut out = Vec::new();
        loop {
            match self.next()? {
                b'"' => return Some(String::from_utf8_lossy(&out).into_owned()),
                b'\\' => match self.next()? {
                    b'u' => {
                        let hex = self.b.get(self.i..self.i + 4)?;
                        self.i += 4;
                        let code = u32::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
                        let c = char::from_u32(code).unwrap_or('\u{fffd}');
                        out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
                    }
                    b'n' => out.push(b'\n'),
                    b't' => out.push(b'\t'),
                    b'r' => out.push(b'\r'),
                    b'b' => out.push(8),
                    b'f' => out.push(12),
                    c => out.push(c),
                },
                c => out.push(c),
            }
        }
    }

    /// A string, or null (None); anything else is skipped as None.
    fn string_value(&mut self) -> Option<Option<String>> {
        if self.peek() == Some(b'"') {
            return self.string().map(Some);
        }
        self.skip_value().map(|_| None)
    }

    fn declared(&mut self) -> Option<Declared> {
        match self.peek()? {
            b'"' => {
                let text = self.string()?;
                Some(parse_size(&text).map_or(Declared::Bad(text), Declared::Bytes))
            }
            b'n' => self.skip_value().map(|_| Declared::None),
            _ => {
                let start = self.i;
                self.skip_value()?;
                let text = String::from_utf8_lossy(&self.b[start..self.i]).into_owned();
                Some(parse_size(&text).map_or(Declared::Bad(text), Declared::Bytes))
            }
        }
    }

    /// Skips one value of any kind (nested objects and arrays counted, strings with their escapes).
    fn skip_value(&mut self) -> Option<()> {
        let mut depth = 0usize;
        loop {
            match self.peek()? {
                b'"' => {
                    self.i += 1;
                    loop {
                        match self.next()? {
                            b'\\' => self.i += 1,
                            b'"' => break,
                            _ => {}
                        }
                    }
                }
                b'{' | b'[' => {
                    depth += 1;
                    self.i += 1;
                }
                b'}' | b']' if depth > 0 => {
                    depth -= 1;
                    self.i += 1;
                }
                b',' | b'}' | b']' if depth == 0 => return Some(()),
                _ => self.i += 1,
            }
            if depth == 0 && matches!(self.peek(), Some(b',' | b'}' | b']') | None) {
                return Some(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_class_jid_and_declared_memory_at_the_top_level_only() {
        let p = br#"{"retry":true,"queue":"default","args":[{"class":"Evil","jid":"x"},"a\"}b"],"class":"ImportJob","jid":"abc123","memory":"150MB","created_at":1.5}"#;
        let f = job_facts(p).unwrap();
        assert_eq!(f.class, "ImportJob");
        assert_eq!(f.jid, "abc123");
        assert_eq!(f.declared, Declared::Bytes(150 * 1024 * 1024));
    }

    #[test]
    fn an_active_job_is_its_wrapped_class() {
        let p = br#"{"class":"Sidekiq::ActiveJob::Wrapper","wrapped":"ReportJob","queue":"default","args":[{"job_class":"ReportJob"}],"jid":"j1","memory":64}"#;
        let f = job_facts(p).unwrap();
        assert_eq!(f.class, "ReportJob");
        assert_eq!(f.declared, Declared::Bytes(64 * 1024 * 1024));
    }

    #[test]
    fn a_bad_declaration_is_kept_as_written() {
        let f = job_facts(br#"{"class":"A","jid":"j","memory":"lots"}"#).unwrap();
        assert_eq!(f.declared, Declared::Bad("lots".into()));
        let f = job_facts(br#"{"class":"A","jid":"j","memory":-5}"#).unwrap();
        assert_eq!(f.declared, Declared::Bad("-5".into()));
        let f = job_facts(br#"{"class":"A","jid":"j","memory":null}"#).unwrap();
        assert_eq!(f.declared, Declared::None);
    }

    #[test]
    fn not_a_job_is_none() {
        for p in [
            &b""[..],
            b"[]",
            b"{}",
            b"{\"class\":1}",
            b"{\"class\":\"A\"",
            b"{\"args\":[1,2",
            b"nonsense",
        ] {
            assert_eq!(job_facts(p), None, "{}", String::from_utf8_lossy(p));
        }
    }

    #[test]
    fn escapes_in_names_are_decoded() {
        let f = job_facts(br#"{ "class" : "A\u00e9\\B" , "jid" : "j" }"#).unwrap();
        assert_eq!(f.class, "A\u{e9}\\B");
    }

    #[test]
    fn sizes_take_the_options_forms() {
        const MB: u64 = 1024 * 1024;
        assert_eq!(parse_size("150MB"), Some(150 * MB));
        assert_eq!(parse_size("150"), Some(150 * MB));
        assert_eq!(parse_size(" 1.5GB "), Some(1536 * MB));
        assert_eq!(parse_size("800m"), Some(800 * MB));
        assert_eq!(parse_size("512KiB"), Some(512 * 1024));
        assert_eq!(parse_size("100B"), Some(100));
        for bad in [
            "", "MB", "0", "0MB", "-5", "1.5.5MB", "150XB", "lots", ".5MB", "5.MB",
        ] {
            assert_eq!(parse_size(bad), None, "{bad}");
        }
    }
}
