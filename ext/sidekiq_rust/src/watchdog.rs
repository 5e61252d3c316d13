//! The last resort of a restart: a native thread that KILLs this process if it is still alive some time
//! after TERM. It is an OS thread, not a Ruby one, so Ruby's shutdown (which ends every Ruby thread and can
//! then hang on a job that ignores interrupts) cannot stop it.

use std::io::Write;
use std::time::Duration;

use magnus::{function, Error, Object, RModule, Ruby};

use crate::errors::{error, Kind};

pub fn init(_ruby: &Ruby, native: &RModule) -> Result<(), Error> {
    native.define_singleton_method("arm_kill_timer", function!(arm_kill_timer, 1))?;
    Ok(())
}

/// Starts the timer: after `seconds`, a line on stderr and SIGKILL to this process.
fn arm_kill_timer(seconds: f64) -> Result<(), Error> {
    if !(seconds.is_finite() && seconds > 0.0) {
        return Err(error(
            Kind::Error,
            format!("the kill timer needs a positive number of seconds, got {seconds}"),
        ));
    }
    let delay = Duration::from_secs_f64(seconds);
    std::thread::Builder::new()
        .name("sidekiq_rust-kill".to_string())
        .spawn(move || {
            std::thread::sleep(delay);
            // SAFETY: getpid and kill have no preconditions.
            let pid = unsafe { libc::getpid() };
            let _ = writeln!(
                std::io::stderr(),
                "sidekiq_rust: still alive {seconds}s after TERM, sending KILL to pid {pid}"
            );
            unsafe { libc::kill(pid, libc::SIGKILL) };
        })
        .map(|_| ())
        .map_err(|e| {
            error(
                Kind::Error,
                format!("could not start the kill timer thread: {e}"),
            )
        })
}
