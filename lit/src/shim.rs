//! lit's libtorch shim (`csrc/torch_shim.cpp`): its declarations, the conversion of its error
//! strings, and one safe function per call, the only code of lit that calls it. Compiled only
//! when the shim built (`cfg(lit_shim)`).

use std::ffi::{c_char, c_int};

use tch::Tensor;
use torch_sys::C_tensor;

use crate::error::{Error, Result};

unsafe extern "C" {
    fn lit_shim_free_error(error: *mut c_char);
    fn lit_rng_get_cpu_state(out: *mut *mut C_tensor) -> *mut c_char;
    fn lit_rng_set_cpu_state(state: *mut C_tensor) -> *mut c_char;
    fn lit_autocast_enter(cuda: c_int, dtype: c_int, was_enabled: *mut c_int, old_dtype: *mut c_int) -> *mut c_char;
    fn lit_autocast_exit(cuda: c_int, was_enabled: c_int, old_dtype: c_int) -> *mut c_char;
    fn lit_autocast_is_enabled(cuda: c_int) -> c_int;
    fn lit_set_deterministic(deterministic: c_int, warn_only: c_int) -> *mut c_char;
    fn lit_set_cudnn_benchmark(benchmark: c_int) -> *mut c_char;
    fn lit_set_detect_anomaly(enabled: c_int) -> *mut c_char;
    fn lit_clear_grad(param: *mut C_tensor) -> *mut c_char;
    fn lit_single_threaded_here() -> *mut c_char;
    fn lit_fused_adam(
        params: *const *mut C_tensor,
        grads: *const *mut C_tensor,
        exp_avgs: *const *mut C_tensor,
        exp_avg_sqs: *const *mut C_tensor,
        max_exp_avg_sqs: *const *mut C_tensor,
        n: c_int,
        step: *mut C_tensor,
        lr: f64,
        beta1: f64,
        beta2: f64,
        weight_decay: f64,
        eps: f64,
        amsgrad: c_int,
        decoupled: c_int,
    ) -> *mut c_char;
    fn lit_fused_sgd(
        params: *const *mut C_tensor,
        grads: *const *mut C_tensor,
        buffers: *const *mut C_tensor,
        n: c_int,
        weight_decay: f64,
        momentum: f64,
        lr: f64,
        dampening: f64,
        nesterov: c_int,
        first_step: c_int,
    ) -> *mut c_char;
    fn lit_profile_begin(path: *const c_char, recorder: *mut *mut std::ffi::c_void) -> *mut c_char;
    fn lit_profile_end(recorder: *mut std::ffi::c_void) -> *mut c_char;
    fn lit_trace_begin(inputs: *const *mut C_tensor, ninputs: c_int) -> *mut c_char;
    fn lit_trace_end(
        outputs: *const *mut C_tensor,
        noutputs: c_int,
        description: *mut *mut c_char,
        tensors: *mut *mut *mut C_tensor,
        ntensors: *mut i64,
    ) -> *mut c_char;
    fn lit_script_trace_begin(
        params: *const *mut C_tensor,
        names: *const *const c_char,
        buffers: *const c_int,
        nparams: c_int,
        inputs: *const *mut C_tensor,
        ninputs: c_int,
        module: *mut *mut std::ffi::c_void,
    ) -> *mut c_char;
    fn lit_script_trace_end(
        module: *mut std::ffi::c_void,
        outputs: *const *mut C_tensor,
        noutputs: c_int,
        bytes: *mut *mut c_char,
        len: *mut i64,
    ) -> *mut c_char;
    fn lit_trace_free(description: *mut c_char, tensors: *mut *mut C_tensor);
}

/// `Ok` for a null error; otherwise the shim's message, prefixed with `what`, as an error (the
/// string is freed).
fn check(what: &str, error: *mut c_char) -> Result<()> {
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

// ----- safe wrappers: the only place lit calls the shim -----

fn tensor_ptrs(tensors: &[Tensor]) -> Vec<*mut C_tensor> {
    tensors.iter().map(|t| t.as_ptr() as *mut C_tensor).collect()
}

fn len_i32(n: usize, what: &str) -> Result<c_int> {
    c_int::try_from(n).map_err(|_| Error::msg(format!("{what}: {n} is too many for the shim")))
}

/// libtorch's default CPU generator state, as a byte tensor.
pub(crate) fn rng_cpu_state() -> Result<Tensor> {
    let mut ptr = std::ptr::null_mut();
    // SAFETY: on success the shim writes a new heap-allocated at::Tensor.
    check("reading the random generator state", unsafe { lit_rng_get_cpu_state(&mut ptr) })?;
    // SAFETY: `ptr` is the tensor the shim just created, owned by no one else; tch frees it.
    Ok(unsafe { Tensor::from_ptr(ptr) })
}

/// Drops `param`'s gradient (`param.grad = None`).
pub(crate) fn clear_grad(param: &Tensor) -> Result<()> {
    let mut param = param.shallow_clone();
    // SAFETY: `param` is a valid tensor handle for the duration of the call; the shim resets
    // the gradient slot of the tensor it points to.
    check("clearing a gradient", unsafe { lit_clear_grad(param.as_mut_ptr()) })
}

/// Makes the calling thread's parallel tensor operations run on it alone (a data-loading worker's,
/// which must not compete with the training thread's intra-op threads).
pub(crate) fn single_threaded_here() -> Result<()> {
    // SAFETY: no arguments; the shim changes a setting of the calling thread.
    check("making a thread single-threaded", unsafe { lit_single_threaded_here() })
}

/// Tensor handles for a C array: shallow clones, kept alive by the returned vector.
fn handles(tensors: &[Tensor]) -> (Vec<Tensor>, Vec<*mut C_tensor>) {
    let mut owned: Vec<Tensor> = tensors.iter().map(Tensor::shallow_clone).collect();
    let ptrs = owned.iter_mut().map(|t| t.as_mut_ptr()).collect();
    (owned, ptrs)
}

/// Adam's (AdamW's, `decoupled`) hyper-parameters for [`fused_adam`].
pub(crate) struct AdamStep {
    pub(crate) lr: f64,
    pub(crate) betas: (f64, f64),
    pub(crate) weight_decay: f64,
    pub(crate) eps: f64,
    pub(crate) amsgrad: bool,
    pub(crate) decoupled: bool,
}

/// One Adam step of a parameter group in libtorch's fused kernel (`torch.optim.Adam(fused=True)`).
/// The lists are parallel; `max_exp_avg_sqs` is empty unless `amsgrad`; `step` is the (already
/// incremented) step count as a 0-d float tensor.
pub(crate) fn fused_adam(
    [params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs]: [&[Tensor]; 5],
    step: &Tensor,
    h: &AdamStep,
) -> Result<()> {
    let n = params.len();
    if [grads, exp_avgs, exp_avg_sqs].iter().any(|l| l.len() != n) || (h.amsgrad && max_exp_avg_sqs.len() != n) {
        return Err(Error::msg("a fused Adam step: lists of different lengths"));
    }
    let (_p, p) = handles(params);
    let (_g, g) = handles(grads);
    let (_m, m) = handles(exp_avgs);
    let (_v, v) = handles(exp_avg_sqs);
    let (_x, x) = handles(max_exp_avg_sqs);
    let mut step = step.shallow_clone();
    // SAFETY: every pointer is a valid tensor handle kept alive by the vectors above for the
    // whole call; the lists hold `n` entries (`max_exp_avg_sqs` is read only with `amsgrad`,
    // when it has `n` too), and the kernel updates the tensors in place.
    check("a fused Adam step", unsafe {
        lit_fused_adam(
            p.as_ptr(),
            g.as_ptr(),
            m.as_ptr(),
            v.as_ptr(),
            x.as_ptr(),
            n as c_int,
            step.as_mut_ptr(),
            h.lr,
            h.betas.0,
            h.betas.1,
            h.weight_decay,
            h.eps,
            h.amsgrad.into(),
            h.decoupled.into(),
        )
    })
}

/// SGD's hyper-parameters for [`fused_sgd`].
pub(crate) struct SgdStep {
    pub(crate) lr: f64,
    pub(crate) momentum: f64,
    pub(crate) dampening: f64,
    pub(crate) nesterov: bool,
    pub(crate) weight_decay: f64,
}

/// One SGD step of a parameter group in libtorch's fused kernel (`torch.optim.SGD(fused=True)`).
/// `buffers` are the momentum buffers (empty without momentum); with `first_step` the kernel
/// fills them from the gradients.
pub(crate) fn fused_sgd(
    params: &[Tensor],
    grads: &[Tensor],
    buffers: &[Tensor],
    h: &SgdStep,
    first_step: bool,
) -> Result<()> {
    let n = params.len();
    if grads.len() != n || (h.momentum != 0.0 && buffers.len() != n) {
        return Err(Error::msg("a fused SGD step: lists of different lengths"));
    }
    let (_p, p) = handles(params);
    let (_g, g) = handles(grads);
    let (_b, b) = handles(buffers);
    // SAFETY: every pointer is a valid tensor handle kept alive by the vectors above for the
    // whole call; the lists hold `n` entries (`buffers` is read only with momentum, when it has
    // `n` too), and the kernel updates the tensors in place.
    check("a fused SGD step", unsafe {
        lit_fused_sgd(
            p.as_ptr(),
            g.as_ptr(),
            b.as_ptr(),
            n as c_int,
            h.weight_decay,
            h.momentum,
            h.lr,
            h.dampening,
            h.nesterov.into(),
            first_step.into(),
        )
    })
}

/// Restores a state [`rng_cpu_state`] returned.
pub(crate) fn set_rng_cpu_state(state: &Tensor) -> Result<()> {
    let mut state = state.shallow_clone();
    // SAFETY: `state` is a valid tensor for the duration of the call.
    check("restoring the random generator state", unsafe { lit_rng_set_cpu_state(state.as_mut_ptr()) })
}

/// Turns autocast on for the CPU or CUDA at c10 ScalarType `dtype`; returns the previous
/// (enabled, dtype), for [`autocast_exit`].
pub(crate) fn autocast_enter(cuda: bool, dtype: c_int) -> Result<(c_int, c_int)> {
    let (mut was, mut old) = (0, 0);
    // SAFETY: plain values in, two integers written out.
    check("autocast", unsafe { lit_autocast_enter(cuda.into(), dtype, &mut was, &mut old) })?;
    Ok((was, old))
}

/// Restores what [`autocast_enter`] returned.
pub(crate) fn autocast_exit(cuda: bool, previous: (c_int, c_int)) -> Result<()> {
    // SAFETY: plain values.
    check("autocast", unsafe { lit_autocast_exit(cuda.into(), previous.0, previous.1) })
}

/// Whether autocast is on for the CPU or CUDA.
pub(crate) fn autocast_is_enabled(cuda: bool) -> bool {
    // SAFETY: reads a flag.
    unsafe { lit_autocast_is_enabled(cuda.into()) != 0 }
}

/// `torch.use_deterministic_algorithms(deterministic, warn_only=…)`; cuBLAS gets the fixed
/// workspace it needs to be deterministic (as Lightning sets it) unless one is configured.
pub(crate) fn set_deterministic(deterministic: bool, warn_only: bool) -> Result<()> {
    if deterministic && std::env::var_os("CUBLAS_WORKSPACE_CONFIG").is_none() {
        // SAFETY: set before any CUDA work of the run, from the thread that drives it.
        unsafe { std::env::set_var("CUBLAS_WORKSPACE_CONFIG", ":4096:8") };
    }
    // SAFETY: plain flags.
    check("deterministic", unsafe { lit_set_deterministic(deterministic.into(), warn_only.into()) })
}

/// `torch.backends.cudnn.benchmark`.
pub(crate) fn set_cudnn_benchmark(benchmark: bool) -> Result<()> {
    // SAFETY: a plain flag.
    check("benchmark", unsafe { lit_set_cudnn_benchmark(benchmark.into()) })
}

/// `torch.autograd.set_detect_anomaly`.
pub(crate) fn set_detect_anomaly(enabled: bool) -> Result<()> {
    // SAFETY: a plain flag.
    check("detect_anomaly", unsafe { lit_set_detect_anomaly(enabled.into()) })
}

/// libtorch's operator profiler while it lives; [`ProfileRecorder::end`] writes its Chrome trace.
#[derive(Debug)]
pub(crate) struct ProfileRecorder(*mut std::ffi::c_void);

impl ProfileRecorder {
    /// Starts profiling; the trace goes to `path` at the end.
    pub(crate) fn begin(path: &std::path::Path) -> Result<Self> {
        let c = std::ffi::CString::new(path.to_string_lossy().as_bytes())
            .map_err(|_| Error::msg(format!("profiler path {} holds a NUL byte", path.display())))?;
        let mut recorder = std::ptr::null_mut();
        // SAFETY: `c` lives for the call; the shim returns a recorder that `end` frees.
        check("starting the PyTorch profiler", unsafe { lit_profile_begin(c.as_ptr(), &mut recorder) })?;
        Ok(ProfileRecorder(recorder))
    }

    /// Stops profiling and writes the trace.
    pub(crate) fn end(self) -> Result<()> {
        // SAFETY: the recorder `begin` created, ended (and freed) once: `self` is consumed.
        check("writing the PyTorch profiler trace", unsafe { lit_profile_end(self.0) })
    }
}

/// Starts libtorch's tracer on `inputs` (for ONNX export); end it with [`trace_end`].
pub(crate) fn trace_begin(inputs: &[Tensor]) -> Result<()> {
    let mut c_inputs = tensor_ptrs(inputs);
    let n = len_i32(c_inputs.len(), "tracing inputs")?;
    // SAFETY: the pointers are live tensors for the duration of the call.
    check("tracing", unsafe { lit_trace_begin(c_inputs.as_mut_ptr(), n) })
}

/// Ends the trace [`trace_begin`] started, with `outputs` as the graph's outputs; returns the
/// graph's text and the constant tensors it refers to. With no outputs it only ends the trace.
pub(crate) fn trace_end(outputs: &[Tensor]) -> Result<(String, Vec<Tensor>)> {
    let c_outputs = tensor_ptrs(outputs);
    let n = len_i32(c_outputs.len(), "traced outputs")?;
    let (mut description, mut tensors, mut ntensors) = (std::ptr::null_mut(), std::ptr::null_mut(), 0i64);
    let outputs_ptr = if c_outputs.is_empty() { std::ptr::null() } else { c_outputs.as_ptr() };
    // SAFETY: the output pointers are live; on success the shim allocates the description and an
    // array of new tensors, taken over below and freed with `lit_trace_free`.
    let error = unsafe { lit_trace_end(outputs_ptr, n, &mut description, &mut tensors, &mut ntensors) };
    let result = check("tracing", error);
    let text = if description.is_null() {
        String::new()
    } else {
        // SAFETY: a NUL-terminated string from the shim.
        unsafe { std::ffi::CStr::from_ptr(description) }.to_string_lossy().into_owned()
    };
    let taken: Vec<Tensor> = if tensors.is_null() {
        Vec::new()
    } else {
        (0..ntensors as usize)
            // SAFETY: each entry is a new at::Tensor owned by no one else.
            .map(|i| unsafe { Tensor::from_ptr(*tensors.add(i)) })
            .collect()
    };
    // SAFETY: both came from `lit_trace_end` (or are null); the tensors are owned by `taken`.
    unsafe { lit_trace_free(description, tensors) };
    result.map(|()| (text, taken))
}

/// A TorchScript module being traced, whose parameters are a variable store's variables.
#[derive(Debug)]
pub(crate) struct ScriptTrace(*mut std::ffi::c_void);

impl ScriptTrace {
    /// Starts tracing `inputs` with `params` (name, tensor, whether it is a buffer) as the
    /// module's parameters and buffers.
    pub(crate) fn begin(params: &[(String, Tensor, bool)], inputs: &[Tensor]) -> Result<Self> {
        let names: Vec<std::ffi::CString> = params
            .iter()
            .map(|(n, _, _)| std::ffi::CString::new(n.as_str()).map_err(|e| Error::msg(e.to_string())))
            .collect::<Result<_>>()?;
        let name_ptrs: Vec<*const c_char> = names.iter().map(|n| n.as_ptr()).collect();
        let c_params: Vec<*mut C_tensor> = params.iter().map(|(_, t, _)| t.as_ptr() as *mut C_tensor).collect();
        let buffers: Vec<c_int> = params.iter().map(|(_, _, buffer)| c_int::from(*buffer)).collect();
        let c_inputs = tensor_ptrs(inputs);
        let (np, ni) = (len_i32(c_params.len(), "parameters")?, len_i32(c_inputs.len(), "inputs")?);
        let mut module = std::ptr::null_mut();
        // SAFETY: every pointer is live for the call; the shim owns the module it creates until
        // `lit_script_trace_end` frees it.
        let error = unsafe {
            lit_script_trace_begin(
                c_params.as_ptr(),
                name_ptrs.as_ptr(),
                buffers.as_ptr(),
                np,
                c_inputs.as_ptr(),
                ni,
                &mut module,
            )
        };
        check("tracing `forward`", error)?;
        Ok(ScriptTrace(module))
    }

    /// Ends the trace with `outputs` and returns the serialised TorchScript module.
    pub(crate) fn end(self, outputs: &[Tensor]) -> Result<Vec<u8>> {
        let c_outputs = tensor_ptrs(outputs);
        let n = len_i32(c_outputs.len(), "traced outputs")?;
        let (mut bytes, mut len) = (std::ptr::null_mut(), 0i64);
        // SAFETY: ends the trace `begin` started (and frees its module, once: `self` is
        // consumed); on success the shim allocates `len` bytes, copied below and freed.
        let error = unsafe { lit_script_trace_end(self.0, c_outputs.as_ptr(), n, &mut bytes, &mut len) };
        check("tracing `forward`", error)?;
        // SAFETY: the shim wrote `len` bytes at `bytes`.
        let data = unsafe { std::slice::from_raw_parts(bytes as *const u8, len as usize) }.to_vec();
        // SAFETY: `bytes` came from the shim and is freed once.
        unsafe { lit_trace_free(bytes, std::ptr::null_mut()) };
        Ok(data)
    }
}
