//! Ruby bindings of sidekiq_rust. This file only wires: each concern lives in its own module with an `init`.

use magnus::{Error, Module, Ruby};

mod allocator;
mod cgroup;
mod convert;
mod errors;
mod guard;
mod memory;
mod named;
mod nogvl;
mod reclaim;
mod symbol_enum;
mod watchdog;

#[magnus::init]
fn init(ruby: &Ruby) -> Result<(), Error> {
    let root = ruby.define_module("SidekiqRust")?;
    errors::init(ruby, &root)?;
    let native = root.define_module("Native")?;
    memory::init(ruby, &native)?;
    cgroup::init(ruby, &native)?;
    allocator::init(ruby, &native)?;
    guard::init(ruby, &native)?;
    watchdog::init(ruby, &native)?;
    Ok(())
}
