//! Named data across the boundary: every native answer with more than one figure is a Hash with Symbol keys,
//! built here, so that Ruby reads `answer[:after]`, never `answer[2]`.

use magnus::{Error, IntoValue, RHash, Ruby};

/// A Hash with Symbol keys, built field by field: `Named::new(ruby).with("before", 1).with("after", 2).hash()`.
/// The first failure (none is expected: Symbol keys, a fresh Hash) is kept and returned by `hash`.
pub struct Named<'r> {
    ruby: &'r Ruby,
    hash: RHash,
    failed: Option<Error>,
}

impl<'r> Named<'r> {
    pub fn new(ruby: &'r Ruby) -> Self {
        Named {
            ruby,
            hash: ruby.hash_new(),
            failed: None,
        }
    }

    pub fn with(mut self, key: &str, value: impl IntoValue) -> Self {
        if self.failed.is_none() {
            let value = self.ruby.into_value(value);
            if let Err(e) = self.hash.aset(self.ruby.to_symbol(key), value) {
                self.failed = Some(e);
            }
        }
        self
    }

    pub fn hash(self) -> Result<RHash, Error> {
        match self.failed {
            Some(e) => Err(e),
            None => Ok(self.hash),
        }
    }
}
