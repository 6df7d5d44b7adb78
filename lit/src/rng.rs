//! libtorch's default CPU generator state, read and restored through a small C++ shim, so that a
//! resumed run draws the same random numbers (dropout masks, `randn`) as an uninterrupted one.

use tch::Tensor;

use crate::error::Result;

/// The CPU generator's state (a byte tensor), or `None` when lit was built without the shim.
pub(crate) fn cpu_state() -> Result<Option<Tensor>> {
    #[cfg(lit_shim)]
    {
        crate::shim::rng_cpu_state().map(Some)
    }
    #[cfg(not(lit_shim))]
    Ok(None)
}

/// Restores a state `cpu_state` returned.
pub(crate) fn set_cpu_state(state: &Tensor) -> Result<()> {
    #[cfg(lit_shim)]
    {
        crate::shim::set_rng_cpu_state(state)
    }
    #[cfg(not(lit_shim))]
    {
        let _ = state;
        Ok(())
    }
}
