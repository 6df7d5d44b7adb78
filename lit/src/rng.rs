//! libtorch's default CPU generator state, read and restored through a small C++ shim, so that a
//! resumed run draws the same random numbers (dropout masks, `randn`) as an uninterrupted one.

use tch::Tensor;

use crate::error::Result;

#[cfg(lit_shim)]
use crate::shim::{self as ffi, check};

/// The CPU generator's state (a byte tensor), or `None` when lit was built without the shim.
pub(crate) fn cpu_state() -> Result<Option<Tensor>> {
    #[cfg(lit_shim)]
    {
        let mut ptr = std::ptr::null_mut();
        // SAFETY: on success the shim writes a new heap-allocated at::Tensor, which
        // `Tensor::from_ptr` takes ownership of (tch frees it on drop).
        check("reading the random generator state", unsafe { ffi::lit_rng_get_cpu_state(&mut ptr) })?;
        // SAFETY: `ptr` is the tensor the shim just created, owned by no one else.
        Ok(Some(unsafe { Tensor::from_ptr(ptr) }))
    }
    #[cfg(not(lit_shim))]
    Ok(None)
}

/// Restores a state `cpu_state` returned.
pub(crate) fn set_cpu_state(state: &Tensor) -> Result<()> {
    #[cfg(lit_shim)]
    {
        let mut state = state.shallow_clone();
        // SAFETY: `state` is a valid tensor for the duration of the call.
        check("restoring the random generator state", unsafe { ffi::lit_rng_set_cpu_state(state.as_mut_ptr()) })
    }
    #[cfg(not(lit_shim))]
    {
        let _ = state;
        Ok(())
    }
}
