//! Pure logic of sidekiq_rust, free of Ruby types so that `cargo test` covers it:
//! procfs and cgroup parsers, the guard's policy state machine and per-job-class statistics.

pub mod allocator;
pub mod cgroup;
pub mod jobstats;
pub mod policy;
pub mod procfs;
