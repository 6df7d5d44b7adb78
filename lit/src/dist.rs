//! torch.distributed's engine (c10d) through a small C++ shim: a TCPStore rendezvous and a Gloo
//! process group with all-reduce, broadcast, all-gather and barrier. Every C++ exception comes
//! back as an [`Error::Distributed`](crate::Error::Distributed).

use std::time::Duration;

use tch::Tensor;

use crate::error::{Error, Result};

/// How `all_reduce` combines values across processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReduceOp {
    /// Sum.
    Sum,
    /// Mean (a sum divided by the world size).
    Avg,
    /// Maximum.
    Max,
    /// Minimum.
    Min,
}

#[cfg(lit_c10d)]
mod ffi {
    use std::ffi::{c_char, c_int, c_long};

    use torch_sys::C_tensor;

    #[repr(C)]
    pub(super) struct LitPg {
        _private: [u8; 0],
    }

    unsafe extern "C" {
        pub(super) fn lit_c10d_free_error(error: *mut c_char);
        pub(super) fn lit_c10d_new_gloo(
            host: *const c_char,
            port: c_int,
            rank: c_int,
            world: c_int,
            join_timeout_ms: c_long,
            timeout_ms: c_long,
            out: *mut *mut LitPg,
        ) -> *mut c_char;
        pub(super) fn lit_c10d_free(pg: *mut LitPg);
        pub(super) fn lit_c10d_allreduce(pg: *mut LitPg, tensor: *mut C_tensor, op: c_int) -> *mut c_char;
        pub(super) fn lit_c10d_broadcast(pg: *mut LitPg, tensor: *mut C_tensor, root: c_int) -> *mut c_char;
        pub(super) fn lit_c10d_allgather(pg: *mut LitPg, input: *mut C_tensor, output: *mut C_tensor) -> *mut c_char;
        pub(super) fn lit_c10d_barrier(pg: *mut LitPg) -> *mut c_char;
    }
}

/// A group of processes training together (one per device), as `torch.distributed`'s default
/// process group.
pub struct ProcessGroup {
    #[cfg(lit_c10d)]
    ptr: *mut ffi::LitPg,
    rank: usize,
    world_size: usize,
}

// SAFETY: the shim's process group is used from one thread at a time (`&mut self` or the
// Trainer's loop), and c10d's ProcessGroupGloo may be moved between threads.
unsafe impl Send for ProcessGroup {}

#[cfg(lit_c10d)]
fn check(operation: &'static str, error: *mut std::ffi::c_char) -> Result<()> {
    if error.is_null() {
        return Ok(());
    }
    // SAFETY: a non-null return is a NUL-terminated string the shim allocated with malloc; it is
    // copied, then freed once by the shim's own free function.
    let message = unsafe { std::ffi::CStr::from_ptr(error) }.to_string_lossy().into_owned();
    // SAFETY: `error` came from the shim and is freed exactly once.
    unsafe { ffi::lit_c10d_free_error(error) };
    Err(Error::Distributed { operation, message: crate::error::torch_message(&message) })
}

impl ProcessGroup {
    /// Joins (rank 0: hosts) the rendezvous at `host:port` and makes a Gloo process group of
    /// `world_size` processes. Collectives fail after `timeout` instead of hanging.
    pub fn gloo(host: &str, port: u16, rank: usize, world_size: usize, timeout: Duration) -> Result<Self> {
        Self::gloo_with_join_timeout(host, port, rank, world_size, timeout, timeout)
    }

    /// [`ProcessGroup::gloo`], with joining bounded by `join_timeout` (the rendezvous: a wrong
    /// address or a process that never starts) and each collective by `timeout`.
    #[cfg(lit_c10d)]
    pub fn gloo_with_join_timeout(
        host: &str,
        port: u16,
        rank: usize,
        world_size: usize,
        join_timeout: Duration,
        timeout: Duration,
    ) -> Result<Self> {
        let host_c = std::ffi::CString::new(host)
            .map_err(|_| Error::Distributed { operation: "init", message: format!("bad host {host:?}") })?;
        let mut ptr = std::ptr::null_mut();
        // SAFETY: `host_c` outlives the call; `ptr` is written only on success.
        let error = unsafe {
            ffi::lit_c10d_new_gloo(
                host_c.as_ptr(),
                port.into(),
                rank as i32,
                world_size as i32,
                join_timeout.as_millis() as std::ffi::c_long,
                timeout.as_millis() as std::ffi::c_long,
                &mut ptr,
            )
        };
        check("init_process_group", error)?;
        Ok(ProcessGroup { ptr, rank, world_size })
    }

    /// Without the shim (Gloo's headers were missing at build time) there is no process group.
    #[cfg(not(lit_c10d))]
    pub fn gloo_with_join_timeout(
        _host: &str,
        _port: u16,
        _rank: usize,
        _world_size: usize,
        _join_timeout: Duration,
        _timeout: Duration,
    ) -> Result<Self> {
        Err(Error::Distributed {
            operation: "init_process_group",
            message: "lit was built without torch.distributed (Gloo headers missing: apt-get install libgloo-dev, then rebuild)"
                .into(),
        })
    }

    /// Whether this build of lit has torch.distributed.
    pub fn available() -> bool {
        cfg!(lit_c10d)
    }

    /// This process's rank.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// The number of processes.
    pub fn world_size(&self) -> usize {
        self.world_size
    }

    /// Combines `tensor` across processes in place.
    pub fn all_reduce(&self, tensor: &mut Tensor, op: ReduceOp) -> Result<()> {
        #[cfg(lit_c10d)]
        {
            let code = match op {
                ReduceOp::Sum | ReduceOp::Avg => 0,
                ReduceOp::Max => 1,
                ReduceOp::Min => 2,
            };
            // SAFETY: `self.ptr` is a live process group; `tensor` is a valid tensor for the call.
            check("all_reduce", unsafe { ffi::lit_c10d_allreduce(self.ptr, tensor.as_mut_ptr(), code) })?;
            if op == ReduceOp::Avg {
                let _ = tensor.g_div_scalar_(self.world_size as f64);
            }
            Ok(())
        }
        #[cfg(not(lit_c10d))]
        {
            let _ = (tensor, op);
            unreachable_group()
        }
    }

    /// Rank `root`'s `bytes` on every process (the others' are ignored).
    pub(crate) fn broadcast_bytes(&self, bytes: &[u8], root: usize) -> Result<Vec<u8>> {
        let mut len = Tensor::from_slice(&[bytes.len() as i64]);
        self.broadcast(&mut len, root)?;
        let len = len.int64_value(&[0]);
        let mut data = match self.rank == root {
            true => Tensor::from_slice(bytes),
            false => Tensor::zeros([len], (tch::Kind::Uint8, tch::Device::Cpu)),
        };
        self.broadcast(&mut data, root)?;
        Ok(Vec::<u8>::try_from(&data)?)
    }

    /// Copies rank `root`'s `tensor` to every process.
    pub fn broadcast(&self, tensor: &mut Tensor, root: usize) -> Result<()> {
        #[cfg(lit_c10d)]
        {
            // SAFETY: as in `all_reduce`.
            check("broadcast", unsafe { ffi::lit_c10d_broadcast(self.ptr, tensor.as_mut_ptr(), root as i32) })
        }
        #[cfg(not(lit_c10d))]
        {
            let _ = (tensor, root);
            unreachable_group()
        }
    }

    /// Every process's `tensor`, stacked along a new first dimension (rank order).
    pub fn all_gather(&self, tensor: &Tensor) -> Result<Tensor> {
        let mut size = vec![self.world_size as i64];
        size.extend(tensor.size());
        #[cfg(lit_c10d)]
        {
            let mut input = tensor.contiguous();
            let mut output = Tensor::zeros(&size, (tensor.kind(), tensor.device()));
            // SAFETY: as in `all_reduce`; `output` has room for every rank's tensor.
            check("all_gather", unsafe { ffi::lit_c10d_allgather(self.ptr, input.as_mut_ptr(), output.as_mut_ptr()) })?;
            Ok(output)
        }
        #[cfg(not(lit_c10d))]
        {
            let _ = size;
            unreachable_group()
        }
    }

    /// Waits until every process gets here.
    pub fn barrier(&self) -> Result<()> {
        #[cfg(lit_c10d)]
        {
            // SAFETY: `self.ptr` is a live process group.
            check("barrier", unsafe { ffi::lit_c10d_barrier(self.ptr) })
        }
        #[cfg(not(lit_c10d))]
        unreachable_group()
    }
}

#[cfg(not(lit_c10d))]
fn unreachable_group<T>() -> Result<T> {
    Err(Error::Distributed { operation: "collective", message: "lit was built without torch.distributed".into() })
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        #[cfg(lit_c10d)]
        // SAFETY: `self.ptr` came from `lit_c10d_new_gloo` and is freed once, here.
        unsafe {
            ffi::lit_c10d_free(self.ptr)
        };
    }
}
