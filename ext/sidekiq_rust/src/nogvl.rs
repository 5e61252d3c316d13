//! Runs a closure with the GVL released, so other Ruby threads keep working meanwhile.
//! The closure must only touch owned data (it is `Send`) and never call into Ruby.

use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;

use magnus::Error;

use crate::errors::{error, Kind};

struct Call<F, R> {
    func: Option<F>,
    result: Option<std::thread::Result<R>>,
}

unsafe extern "C" fn trampoline<F, R>(data: *mut c_void) -> *mut c_void
where
    F: FnOnce() -> R,
{
    // SAFETY: `data` is the `Call` that `nogvl` passed in and keeps alive until this returns.
    let call = unsafe { &mut *(data as *mut Call<F, R>) };
    if let Some(func) = call.func.take() {
        call.result = Some(catch_unwind(AssertUnwindSafe(func)));
    }
    ptr::null_mut()
}

/// Calls `func` without the GVL. A panic inside becomes a `SidekiqRust::Error`, never an unwind into Ruby.
pub fn nogvl<F, R>(what: &str, func: F) -> Result<R, Error>
where
    F: FnOnce() -> R + Send,
    R: Send,
{
    let mut call = Call {
        func: Some(func),
        result: None,
    };
    // SAFETY: the trampoline only runs `func`, which is Send and touches no Ruby object; `call` outlives the call.
    unsafe {
        rb_sys::rb_thread_call_without_gvl(
            Some(trampoline::<F, R>),
            &mut call as *mut Call<F, R> as *mut c_void,
            None,
            ptr::null_mut(),
        );
    }
    match call.result {
        Some(Ok(value)) => Ok(value),
        Some(Err(_)) => Err(error(
            Kind::Error,
            format!("{what} failed inside the native extension (a bug: please report it)"),
        )),
        None => Err(error(Kind::Error, format!("{what} did not run"))),
    }
}
