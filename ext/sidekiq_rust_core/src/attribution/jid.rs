//! The jid of a running job, kept inline.

/// A jid kept inline (Sidekiq's are 24 characters; longer ones are cut at 32 bytes): no allocation per job.
#[derive(Debug, Clone, Copy)]
pub(super) struct Jid {
    bytes: [u8; 32],
    len: u8,
}

impl Jid {
    pub(super) fn new(jid: &str) -> Self {
        let mut end = jid.len().min(32);
        while !jid.is_char_boundary(end) {
            end -= 1;
        }
        let mut bytes = [0u8; 32];
        bytes[..end].copy_from_slice(&jid.as_bytes()[..end]);
        Jid {
            bytes,
            len: end as u8,
        }
    }

    pub(super) fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..self.len as usize]).unwrap_or("")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_jid_is_cut_on_a_character_boundary() {
        assert_eq!(Jid::new("abc").as_str(), "abc");
        assert_eq!(Jid::new(&"x".repeat(40)).as_str(), "x".repeat(32));
        let jid = format!("{}é", "x".repeat(31)); // the 2-byte character would straddle byte 32
        assert_eq!(Jid::new(&jid).as_str(), "x".repeat(31));
    }
}
