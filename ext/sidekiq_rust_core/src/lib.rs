//! Pure logic of sidekiq_rust, free of Ruby types so that `cargo test` covers it:
//! procfs, cgroup and PSI parsers, the guard's policy state machine and the per-job-class attribution of memory.

pub mod admission;
pub mod allocator;
pub mod attribution;
pub mod cgroup;
pub mod guard;
pub mod names;
pub mod policy;
pub mod procfs;
pub mod psi;
pub mod settings;
