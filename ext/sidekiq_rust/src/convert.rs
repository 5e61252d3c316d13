//! Conversions between Ruby values and the core's types for the guard: the settings Hash into the pairs
//! `sidekiq_rust_core::settings` checks, and an action into its Symbol of `policy::ACTIONS` (the other named
//! enums go through `symbol_enum`).

use magnus::r_hash::ForEach;
use magnus::{prelude::*, Error, Float, Integer, RHash, RString, Ruby, Symbol, Value};
use sidekiq_rust_core::policy::Action;
use sidekiq_rust_core::settings;

use crate::errors::{error, Kind};

/// The settings Hash as `key => value` pairs (Symbol or String keys), in the Hash's order.
pub fn settings_pairs(
    ruby: &Ruby,
    options: RHash,
) -> Result<Vec<(String, settings::Value)>, Error> {
    let mut pairs = Vec::new();
    options.foreach(|key: Value, value: Value| {
        pairs.push((key_name(key)?, setting_value(ruby, value)?));
        Ok(ForEach::Continue)
    })?;
    Ok(pairs)
}

/// A Ruby value of the settings Hash, as the pure settings check takes it.
fn setting_value(ruby: &Ruby, value: Value) -> Result<settings::Value, Error> {
    if value.is_nil() {
        Ok(settings::Value::Nil)
    } else if value.is_kind_of(ruby.class_true_class()) {
        Ok(settings::Value::Bool(true))
    } else if value.is_kind_of(ruby.class_false_class()) {
        Ok(settings::Value::Bool(false))
    } else if let Some(i) = Integer::from_value(value) {
        i.to_i64()
            .map(settings::Value::Int)
            .map_err(|_| error(Kind::ConfigurationError, format!("{i} is too large")))
    } else if let Some(f) = Float::from_value(value) {
        Ok(settings::Value::Float(f.to_f64()))
    } else if let Some(s) = Symbol::from_value(value) {
        Ok(settings::Value::Name(s.name()?.into_owned()))
    } else if let Some(s) = RString::from_value(value) {
        Ok(settings::Value::Name(s.to_string()?))
    } else {
        Ok(settings::Value::Name(format!(
            "<{}>",
            value.class().inspect()
        )))
    }
}

fn key_name(key: Value) -> Result<String, Error> {
    if let Some(s) = Symbol::from_value(key) {
        return Ok(s.name()?.into_owned());
    }
    if let Some(s) = RString::from_value(key) {
        return s.to_string();
    }
    Err(error(
        Kind::ConfigurationError,
        format!(
            "the native guard's settings take Symbol keys, got {}",
            key.inspect()
        ),
    ))
}

/// An action's Symbol of `policy::ACTIONS`; nil for no action.
pub fn action_symbol(ruby: &Ruby, action: Action) -> Option<Symbol> {
    action.name().map(|name| ruby.to_symbol(name))
}
