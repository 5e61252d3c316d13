//! One way for every enum whose values cross the boundary by name (a Ruby Symbol, a log word, a Redis field) to
//! go to its name and back: `Named` lists the values once, and `from_name` and the error text's list of names
//! come from that list. The binding's `symbol_enum` turns them into Symbols with one error message.

pub trait Named: Copy + 'static {
    /// What the names are of, for error messages ("denial reason").
    const WHAT: &'static str;

    /// Every value, in the order the names are listed.
    fn all() -> &'static [Self];

    fn as_str(self) -> &'static str;

    fn from_name(name: &str) -> Option<Self> {
        Self::all().iter().copied().find(|v| v.as_str() == name)
    }

    /// Every name, for an error's "one of ...".
    fn names() -> Vec<&'static str> {
        Self::all().iter().map(|v| v.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::Named;
    use crate::admission::{Decision, Hold};
    use crate::guard::Verdict;
    use crate::policy::{Denial, Reason};
    use crate::settings::Metric;

    fn round_trips<T: Named + PartialEq + std::fmt::Debug>() {
        let names = T::names();
        for (value, name) in T::all().iter().zip(&names) {
            assert_eq!(T::from_name(name), Some(*value), "{}", T::WHAT);
        }
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "{} names repeat", T::WHAT);
        assert_eq!(T::from_name("no such name"), None);
    }

    #[test]
    fn every_named_enum_goes_to_its_name_and_back() {
        round_trips::<Denial>();
        round_trips::<Decision>();
        round_trips::<Hold>();
        round_trips::<Reason>();
        round_trips::<Metric>();
        round_trips::<Verdict>();
    }
}
