//! The core's named enums (`sidekiq_rust_core::names::Named`) as Ruby Symbols and back, with one error text.

use magnus::{Error, Ruby, Symbol};
use sidekiq_rust_core::names::Named;

use crate::errors::{error, Kind};

pub fn symbol<T: Named>(ruby: &Ruby, value: T) -> Symbol {
    ruby.to_symbol(value.as_str())
}

/// The value named by `symbol`; an `InvalidArgument` naming what it is and the accepted names otherwise.
pub fn from_symbol<T: Named>(symbol: Symbol) -> Result<T, Error> {
    let name = symbol.name()?;
    T::from_name(&name).ok_or_else(|| {
        error(
            Kind::InvalidArgument,
            format!(
                "unknown {} :{name} (one of :{})",
                T::WHAT,
                T::names().join(", :")
            ),
        )
    })
}
