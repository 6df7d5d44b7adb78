//! libtorch's default CPU generator state, read and restored through a small C++ shim, so that a
//! resumed run draws the same random numbers (dropout masks, `randn`) as an uninterrupted one.

use tch::Tensor;

use crate::error::{Error, Result};

#[cfg(lit_rng)]
mod ffi {
    use std::ffi::c_char;

    use torch_sys::C_tensor;

    unsafe extern "C" {
        pub(super) fn lit_rng_free_error(error: *mut c_char);
        pub(super) fn lit_rng_get_cpu_state(out: *mut *mut C_tensor) -> *mut c_char;
        pub(super) fn lit_rng_set_cpu_state(state: *mut C_tensor) -> *mut c_char;
    }
}

#[cfg(lit_rng)]
fn check(what: &str, error: *mut std::ffi::c_char) -> Result<()> {
    if error.is_null() {
        return Ok(());
    }
    // SAFETY: a non-null return is a NUL-terminated string the shim allocated; it is copied,
    // then freed once by the shim.
    let message = unsafe { std::ffi::CStr::from_ptr(error) }.to_string_lossy().into_owned();
    // SAFETY: `error` came from the shim and is freed exactly once.
    unsafe { ffi::lit_rng_free_error(error) };
    Err(Error::msg(format!("{what}: {message}")))
}

/// The CPU generator's state (a byte tensor), or `None` when lit was built without the shim.
pub(crate) fn cpu_state() -> Result<Option<Tensor>> {
    #[cfg(lit_rng)]
    {
        let mut ptr = std::ptr::null_mut();
        // SAFETY: on success the shim writes a new heap-allocated at::Tensor, which
        // `Tensor::from_ptr` takes ownership of (tch frees it on drop).
        check("reading the random generator state", unsafe { ffi::lit_rng_get_cpu_state(&mut ptr) })?;
        // SAFETY: `ptr` is the tensor the shim just created, owned by no one else.
        Ok(Some(unsafe { Tensor::from_ptr(ptr) }))
    }
    #[cfg(not(lit_rng))]
    Ok(None)
}

/// Restores a state `cpu_state` returned.
pub(crate) fn set_cpu_state(state: &Tensor) -> Result<()> {
    #[cfg(lit_rng)]
    {
        let mut state = state.shallow_clone();
        // SAFETY: `state` is a valid tensor for the duration of the call.
        check("restoring the random generator state", unsafe { ffi::lit_rng_set_cpu_state(state.as_mut_ptr()) })
    }
    #[cfg(not(lit_rng))]
    {
        let _ = state;
        Ok(())
    }
}
