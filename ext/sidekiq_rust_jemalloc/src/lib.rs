//! jemalloc as a shared library to LD_PRELOAD into a Ruby process (`sidekiq_rust exec`).
//!
//! tikv-jemalloc-sys links jemalloc statically, with its `_rjem_` prefix. A cdylib only exports what its Rust code
//! defines (rustc's version script hides every symbol of a linked C archive), so this crate defines the standard
//! and jemalloc entry points under their plain names and forwards each to jemalloc. This file only wires.

mod alloc;
mod conf;
mod control;
