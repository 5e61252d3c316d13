//! The Ruby error classes (defined in `lib/sidekiq_rust/error.rb`), looked up once at load time.

use std::io;
use std::sync::OnceLock;

use magnus::value::Opaque;
use magnus::{Error, ExceptionClass, Module, RModule, Ruby};

#[derive(Clone, Copy)]
pub enum Kind {
    Error,
    NoSuchProcess,
    PermissionDenied,
    NotSupported,
    InvalidArgument,
    ConfigurationError,
}

impl Kind {
    const COUNT: usize = 6;
    const ALL: [Kind; Kind::COUNT] = [
        Kind::Error,
        Kind::NoSuchProcess,
        Kind::PermissionDenied,
        Kind::NotSupported,
        Kind::InvalidArgument,
        Kind::ConfigurationError,
    ];

    fn name(self) -> &'static str {
        match self {
            Kind::Error => "Error",
            Kind::NoSuchProcess => "NoSuchProcess",
            Kind::PermissionDenied => "PermissionDenied",
            Kind::NotSupported => "NotSupported",
            Kind::InvalidArgument => "InvalidArgument",
            Kind::ConfigurationError => "ConfigurationError",
        }
    }
}

static CLASSES: OnceLock<[Opaque<ExceptionClass>; Kind::COUNT]> = OnceLock::new();

pub fn init(ruby: &Ruby, root: &RModule) -> Result<(), Error> {
    let mut found = Vec::with_capacity(Kind::ALL.len());
    for kind in Kind::ALL {
        let class: ExceptionClass = root.const_get(kind.name()).map_err(|_| {
            Error::new(
                ruby.exception_load_error(),
                format!(
                    "SidekiqRust::{} is not defined: require \"sidekiq_rust\", not the native extension alone",
                    kind.name()
                ),
            )
        })?;
        found.push(Opaque::from(class));
    }
    let classes = <[Opaque<ExceptionClass>; Kind::COUNT]>::try_from(found).map_err(|_| {
        Error::new(
            ruby.exception_load_error(),
            "SidekiqRust's error classes did not all load (a bug: please report it)",
        )
    })?;
    // Set once per process: a second load of the extension finds the same classes already there.
    let _ = CLASSES.set(classes);
    Ok(())
}

/// A `SidekiqRust::<kind>` exception with `message`.
pub fn error(kind: Kind, message: impl Into<String>) -> Error {
    let message = message.into();
    match (Ruby::get(), CLASSES.get()) {
        (Ok(ruby), Some(classes)) => Error::new(ruby.get_inner(classes[kind as usize]), message),
        (Ok(ruby), None) => Error::new(ruby.exception_runtime_error(), message),
        // Only reachable off a Ruby thread, which the bindings never build errors on.
        #[allow(deprecated)]
        (Err(_), _) => Error::new(magnus::exception::runtime_error(), message),
    }
}

/// Maps an I/O error on `file` (about process `pid`, if any) to the matching Ruby exception.
pub fn io_error(err: &io::Error, file: &str, pid: Option<i32>) -> Error {
    let who = match pid {
        Some(pid) => format!("process {pid}"),
        None => "this process".to_string(),
    };
    match err.raw_os_error() {
        Some(libc::ENOENT) | Some(libc::ESRCH) if !proc_mounted() => error(
            Kind::NotSupported,
            format!("{file} cannot be read: /proc is not mounted (sidekiq_rust needs Linux procfs)"),
        ),
        Some(libc::ENOENT) | Some(libc::ESRCH) => error(
            Kind::NoSuchProcess,
            format!("no such process: {who} ({file} does not exist); was the PID right, or has it exited?"),
        ),
        Some(libc::EACCES) | Some(libc::EPERM) => error(
            Kind::PermissionDenied,
            format!("permission denied reading {file} of {who}: run as the same user as the process, or as root"),
        ),
        _ => error(Kind::Error, format!("reading {file} of {who} failed: {err}")),
    }
}

fn proc_mounted() -> bool {
    std::path::Path::new("/proc/self/stat").exists()
}
