//! The declarations of lit's libtorch shim (`csrc/torch_shim.cpp`) and the conversion of its
//! error strings. Compiled only when the shim built (`cfg(lit_shim)`).

use std::ffi::{c_char, c_int};

use torch_sys::C_tensor;

use crate::error::{Error, Result};

unsafe extern "C" {
    fn lit_shim_free_error(error: *mut c_char);
    pub(crate) fn lit_rng_get_cpu_state(out: *mut *mut C_tensor) -> *mut c_char;
    pub(crate) fn lit_rng_set_cpu_state(state: *mut C_tensor) -> *mut c_char;
    pub(crate) fn lit_autocast_enter(
        cuda: c_int,
        dtype: c_int,
        was_enabled: *mut c_int,
        old_dtype: *mut c_int,
    ) -> *mut c_char;
    pub(crate) fn lit_autocast_exit(cuda: c_int, was_enabled: c_int, old_dtype: c_int) -> *mut c_char;
    pub(crate) fn lit_autocast_is_enabled(cuda: c_int) -> c_int;
    pub(crate) fn lit_set_deterministic(deterministic: c_int, warn_only: c_int) -> *mut c_char;
    pub(crate) fn lit_set_cudnn_benchmark(benchmark: c_int) -> *mut c_char;
    pub(crate) fn lit_set_detect_anomaly(enabled: c_int) -> *mut c_char;
    pub(crate) fn lit_profile_begin(path: *const c_char, recorder: *mut *mut std::ffi::c_void) -> *mut c_char;
    pub(crate) fn lit_profile_end(recorder: *mut std::ffi::c_void) -> *mut c_char;
    pub(crate) fn lit_trace_begin(inputs: *const *mut C_tensor, ninputs: c_int) -> *mut c_char;
    pub(crate) fn lit_trace_end(
        outputs: *const *mut C_tensor,
        noutputs: c_int,
        description: *mut *mut c_char,
        tensors: *mut *mut *mut C_tensor,
        ntensors: *mut i64,
    ) -> *mut c_char;
    pub(crate) fn lit_script_trace_begin(
        params: *const *mut C_tensor,
        names: *const *const c_char,
        nparams: c_int,
        inputs: *const *mut C_tensor,
        ninputs: c_int,
        module: *mut *mut std::ffi::c_void,
    ) -> *mut c_char;
    pub(crate) fn lit_script_trace_end(
        module: *mut std::ffi::c_void,
        outputs: *const *mut C_tensor,
        noutputs: c_int,
        bytes: *mut *mut c_char,
        len: *mut i64,
    ) -> *mut c_char;
    pub(crate) fn lit_trace_free(description: *mut c_char, tensors: *mut *mut C_tensor);
}

/// `Ok` for a null error; otherwise the shim's message, prefixed with `what`, as an error (the
/// string is freed).
pub(crate) fn check(what: &str, error: *mut c_char) -> Result<()> {
    if error.is_null() {
        return Ok(());
    }
    // SAFETY: a non-null return is a NUL-terminated string the shim allocated; it is copied,
    // then freed once by the shim.
    let message = unsafe { std::ffi::CStr::from_ptr(error) }.to_string_lossy().into_owned();
    // SAFETY: `error` came from the shim and is freed exactly once.
    unsafe { lit_shim_free_error(error) };
    Err(Error::msg(format!("{what}: {message}")))
}
