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

    #[repr(C)]
    pub(super) struct LitWork {
        _private: [u8; 0],
    }

    #[repr(C)]
    pub(super) struct LitReducer {
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
        pub(super) fn lit_c10d_has_nccl() -> c_int;
        pub(super) fn lit_c10d_add_nccl(pg: *mut LitPg, timeout_ms: c_long) -> *mut c_char;
        pub(super) fn lit_c10d_allreduce_async(
            pg: *mut LitPg,
            tensor: *mut C_tensor,
            out: *mut *mut LitWork,
        ) -> *mut c_char;
        pub(super) fn lit_c10d_work_wait(work: *mut LitWork) -> *mut c_char;
        pub(super) fn lit_c10d_broadcast_coalesced(
            pg: *mut LitPg,
            tensors: *const *mut C_tensor,
            count: usize,
            root: c_int,
        ) -> *mut c_char;
        pub(super) fn lit_c10d_reducer_new(
            pg: *mut LitPg,
            params: *const *mut C_tensor,
            names: *const *const c_char,
            count: usize,
            bucket_bytes_cap: i64,
            find_unused: c_int,
            gradient_as_bucket_view: c_int,
            out: *mut *mut LitReducer,
        ) -> *mut c_char;
        pub(super) fn lit_c10d_reducer_free(reducer: *mut LitReducer);
        pub(super) fn lit_c10d_reducer_prepare_for_forward(
            reducer: *mut LitReducer,
            rebuilt: *mut c_int,
        ) -> *mut c_char;
        pub(super) fn lit_c10d_reducer_prepare_for_backward(
            reducer: *mut LitReducer,
            outputs: *const *mut C_tensor,
            count: usize,
        ) -> *mut c_char;
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

    /// Whether this build of lit has torch.distributed's NCCL backend (collectives of CUDA
    /// tensors): the NCCL and CUDA headers of the torch wheel's NVIDIA packages were found when
    /// lit was built.
    pub fn nccl_available() -> bool {
        #[cfg(lit_c10d)]
        // SAFETY: a constant query.
        return unsafe { ffi::lit_c10d_has_nccl() } != 0;
        #[cfg(not(lit_c10d))]
        false
    }

    /// Adds NCCL for CUDA tensors (Gloo keeps the CPU's), as
    /// `init_process_group("cpu:gloo,cuda:nccl")`; each collective waits at most `timeout`.
    pub(crate) fn add_nccl(&mut self, timeout: Duration) -> Result<()> {
        #[cfg(lit_c10d)]
        {
            // SAFETY: `self.ptr` is a live process group.
            check("init_process_group", unsafe {
                ffi::lit_c10d_add_nccl(self.ptr, timeout.as_millis() as std::ffi::c_long)
            })
        }
        #[cfg(not(lit_c10d))]
        {
            let _ = timeout;
            unreachable_group()
        }
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

    /// Starts a sum all-reduce of `tensor`; [`PendingWork::wait`] finishes it (the tensor holds
    /// the sum then).
    pub(crate) fn all_reduce_async(&self, tensor: &mut Tensor) -> Result<PendingWork> {
        #[cfg(lit_c10d)]
        {
            let mut work = std::ptr::null_mut();
            // SAFETY: `self.ptr` is a live process group; c10d keeps its own reference to the
            // tensor until the work completes; `work` is written only on success.
            check("all_reduce", unsafe { ffi::lit_c10d_allreduce_async(self.ptr, tensor.as_mut_ptr(), &mut work) })?;
            Ok(PendingWork { ptr: work })
        }
        #[cfg(not(lit_c10d))]
        {
            let _ = tensor;
            unreachable_group()
        }
    }

    /// Copies rank `root`'s `tensors` to every process, packed into few messages (as DDP
    /// broadcasts a module's parameters and buffers).
    pub fn broadcast_coalesced(&self, tensors: &mut [Tensor], root: usize) -> Result<()> {
        #[cfg(lit_c10d)]
        {
            let pointers: Vec<_> = tensors.iter_mut().map(|t| t.as_mut_ptr()).collect();
            // SAFETY: `self.ptr` is a live process group; `pointers` are valid tensors for the call.
            check("broadcast", unsafe {
                ffi::lit_c10d_broadcast_coalesced(self.ptr, pointers.as_ptr(), pointers.len(), root as i32)
            })
        }
        #[cfg(not(lit_c10d))]
        {
            let _ = (tensors, root);
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

/// An all-reduce started by [`ProcessGroup::all_reduce_async`]. Dropping it waits for it.
pub(crate) struct PendingWork {
    #[cfg(lit_c10d)]
    ptr: *mut ffi::LitWork,
}

impl PendingWork {
    /// Waits for the collective to finish.
    pub(crate) fn wait(mut self) -> Result<()> {
        self.finish()
    }

    fn finish(&mut self) -> Result<()> {
        #[cfg(lit_c10d)]
        {
            let ptr = std::mem::replace(&mut self.ptr, std::ptr::null_mut());
            if ptr.is_null() {
                return Ok(());
            }
            // SAFETY: `ptr` came from `lit_c10d_allreduce_async`; waiting frees it, once.
            check("all_reduce", unsafe { ffi::lit_c10d_work_wait(ptr) })
        }
        #[cfg(not(lit_c10d))]
        Ok(())
    }
}

impl Drop for PendingWork {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

/// How [`GradientReducer`] buckets and reduces gradients: DDP's options.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ReducerOptions {
    /// Bucket size in bytes (DDP's `bucket_cap_mb`, default 25 MiB).
    pub(crate) bucket_bytes_cap: i64,
    /// Search each step's graph for parameters that take no part, and reduce without them.
    pub(crate) find_unused_parameters: bool,
    /// Gradients become views into the all-reduce buckets (no copy back).
    pub(crate) gradient_as_bucket_view: bool,
}

/// DDP's gradient reducer (c10d's `Reducer`): each parameter's gradient is copied into a bucket
/// when autograd produces it, and a bucket is all-reduced (averaged) as soon as it is full, while
/// backward goes on; at the end of backward every gradient holds the average over the processes.
pub(crate) struct GradientReducer {
    #[cfg(lit_c10d)]
    ptr: *mut ffi::LitReducer,
    names: Vec<String>,
}

impl GradientReducer {
    /// A reducer over `params` (in the same order on every process), through `group`.
    pub(crate) fn new(group: &ProcessGroup, params: &[(String, Tensor)], options: ReducerOptions) -> Result<Self> {
        let names: Vec<String> = params.iter().map(|(n, _)| n.clone()).collect();
        #[cfg(lit_c10d)]
        {
            let c_names: Vec<std::ffi::CString> =
                names.iter().map(|n| std::ffi::CString::new(n.replace('\0', "")).unwrap_or_default()).collect();
            let name_ptrs: Vec<_> = c_names.iter().map(|n| n.as_ptr()).collect();
            let mut tensors: Vec<Tensor> = params.iter().map(|(_, t)| t.shallow_clone()).collect();
            let pointers: Vec<_> = tensors.iter_mut().map(|t| t.as_mut_ptr()).collect();
            let mut ptr = std::ptr::null_mut();
            // SAFETY: `group.ptr` is a live process group; the tensors and names outlive the call
            // (the Reducer keeps its own references); `ptr` is written only on success.
            check("ddp", unsafe {
                ffi::lit_c10d_reducer_new(
                    group.ptr,
                    pointers.as_ptr(),
                    name_ptrs.as_ptr(),
                    pointers.len(),
                    options.bucket_bytes_cap,
                    options.find_unused_parameters.into(),
                    options.gradient_as_bucket_view.into(),
                    &mut ptr,
                )
            })?;
            Ok(GradientReducer { ptr, names })
        }
        #[cfg(not(lit_c10d))]
        {
            let _ = (group, options, names);
            unreachable_group()
        }
    }

    /// Before the forward pass of a step whose gradients are to be reduced. Returns whether the
    /// buckets were rebuilt (once, after the first step, in the order gradients became ready).
    pub(crate) fn prepare_for_forward(&mut self) -> Result<bool> {
        #[cfg(lit_c10d)]
        {
            let mut rebuilt = 0;
            // SAFETY: `self.ptr` is a live reducer.
            self.check(unsafe { ffi::lit_c10d_reducer_prepare_for_forward(self.ptr, &mut rebuilt) })?;
            Ok(rebuilt != 0)
        }
        #[cfg(not(lit_c10d))]
        unreachable_group()
    }

    /// After the forward pass: the next backward reduces the gradients. With
    /// `find_unused_parameters` the graph behind `outputs` tells which parameters take part.
    pub(crate) fn prepare_for_backward(&mut self, outputs: &[&Tensor]) -> Result<()> {
        #[cfg(lit_c10d)]
        {
            let mut outputs: Vec<Tensor> = outputs.iter().map(|t| t.shallow_clone()).collect();
            let pointers: Vec<_> = outputs.iter_mut().map(|t| t.as_mut_ptr()).collect();
            // SAFETY: `self.ptr` is a live reducer; `pointers` are valid tensors for the call.
            self.check(unsafe {
                ffi::lit_c10d_reducer_prepare_for_backward(self.ptr, pointers.as_ptr(), pointers.len())
            })
        }
        #[cfg(not(lit_c10d))]
        {
            let _ = outputs;
            unreachable_group()
        }
    }

    /// c10d's error, with the parameters it names by index named by their variable names, and
    /// the option that fixes an unused parameter.
    #[cfg(lit_c10d)]
    fn check(&self, error: *mut std::ffi::c_char) -> Result<()> {
        check("ddp", error).map_err(|e| match e {
            Error::Distributed { operation, message } if message.contains("Expected to have finished reduction") => {
                let unused: Vec<&str> = message
                    .lines()
                    .filter_map(|l| l.split_once("did not receive grad for rank"))
                    .flat_map(|(_, rest)| {
                        rest.split_once(':').map(|(_, ids)| ids).unwrap_or_default().split_whitespace()
                    })
                    .filter_map(|id| id.trim_matches(',').parse::<usize>().ok())
                    .filter_map(|i| self.names.get(i).map(String::as_str))
                    .collect();
                Error::Distributed {
                    operation,
                    message: format!(
                        "parameters {unused:?} received no gradient in the previous step, so their gradients were \
                         never averaged across the processes; if some parameters take no part in some steps, set \
                         `.ddp_find_unused_parameters(true)` (Lightning's strategy=\"ddp_find_unused_parameters_true\")"
                    ),
                }
            }
            other => other,
        })
    }
}

impl Drop for GradientReducer {
    fn drop(&mut self) {
        #[cfg(lit_c10d)]
        // SAFETY: `self.ptr` came from `lit_c10d_reducer_new` and is freed once, here.
        unsafe {
            ffi::lit_c10d_reducer_free(self.ptr)
        };
    }
}

// SAFETY: the reducer is used by the Trainer's thread only, one call at a time; c10d's Reducer
// guards its own state with a mutex for the autograd threads.
unsafe impl Send for GradientReducer {}

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

/// A module's replica in distributed data parallel training, for one `fit`: the gradient
/// reducer over its trainable parameters, and its buffers (variables that are not trained, such
/// as batch-norm statistics), which follow rank 0's before a forward pass as DDP's
/// `broadcast_buffers` has them.
pub(crate) struct Replica {
    reducer: GradientReducer,
    buffers: Vec<Tensor>,
    find_unused_parameters: bool,
    /// DDP's `require_forward_param_sync`: the last forward pass reduced gradients, so the next
    /// one starts from rank 0's buffers.
    sync_buffers: bool,
}

impl Replica {
    /// The replica of the module whose variables are `vs`.
    pub(crate) fn new(vs: &tch::nn::VarStore, group: &ProcessGroup, options: ReducerOptions) -> Result<Self> {
        let named = vs.variables();
        let name_of = |t: &Tensor| {
            named.iter().find(|(_, v)| v.data_ptr() == t.data_ptr()).map_or_else(|| "?".to_string(), |(n, _)| n.clone())
        };
        let trainable = vs.trainable_variables();
        let params: Vec<(String, Tensor)> =
            trainable.iter().filter(|t| t.requires_grad()).map(|t| (name_of(t), t.shallow_clone())).collect();
        let mut buffers: Vec<(String, Tensor)> = named
            .iter()
            .filter(|(_, v)| !trainable.iter().any(|t| t.data_ptr() == v.data_ptr()))
            .map(|(n, v)| (n.clone(), v.shallow_clone()))
            .collect();
        buffers.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(Replica {
            reducer: GradientReducer::new(group, &params, options)?,
            buffers: buffers.into_iter().map(|(_, t)| t).collect(),
            find_unused_parameters: options.find_unused_parameters,
            sync_buffers: true,
        })
    }

    /// Before a training forward pass (`training_step`); `grad_sync`: whether this step's
    /// gradients are reduced (not a step inside a gradient accumulation window).
    pub(crate) fn before_training_forward(&mut self, group: &ProcessGroup, grad_sync: bool) -> Result<()> {
        if grad_sync {
            self.reducer.prepare_for_forward()?;
        }
        self.sync_buffers(group)?;
        self.sync_buffers = grad_sync;
        Ok(())
    }

    /// Before the validation forward passes inside `fit`.
    pub(crate) fn before_eval_forward(&mut self, group: &ProcessGroup) -> Result<()> {
        self.sync_buffers(group)?;
        self.sync_buffers = false;
        Ok(())
    }

    fn sync_buffers(&mut self, group: &ProcessGroup) -> Result<()> {
        if self.sync_buffers && !self.buffers.is_empty() {
            tch::no_grad(|| group.broadcast_coalesced(&mut self.buffers, 0))?;
        }
        Ok(())
    }

    /// Before the backward pass of `loss` whose gradients are reduced.
    pub(crate) fn before_backward(&mut self, loss: &Tensor) -> Result<()> {
        match self.find_unused_parameters {
            true => self.reducer.prepare_for_backward(&[loss]),
            false => self.reducer.prepare_for_backward(&[]),
        }
    }
}
