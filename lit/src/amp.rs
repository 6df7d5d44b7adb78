//! Numerical precision: the Trainer's `precision` setting, autocast, and the gradient scaler that
//! "16-mixed" needs (PyTorch's `torch.autocast` and `torch.amp.GradScaler`).

use std::fmt;
use std::str::FromStr;

use tch::{Device, Kind, Tensor};

use crate::error::{ConfigError, Result};
use crate::optim::Optimizer;

/// The precision a run computes in (Lightning's `precision` argument).
///
/// - `"32-true"` (or `"32"`): everything in float32, the default.
/// - `"64-true"` (or `"64"`): the model's variables and the batch's floating-point tensors in
///   float64.
/// - `"bf16-mixed"`: the step hooks (`training_step`, `validation_step`, `test_step`,
///   `predict_step`) run under autocast to bfloat16; variables, gradients and optimizer state
///   stay float32. CPU and CUDA.
/// - `"16-mixed"`: autocast to float16 with a [`GradScaler`]. CUDA only.
/// - `"bf16-true"`, `"16-true"`: variables and floating-point inputs in bfloat16 / float16.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Precision {
    /// float32.
    #[default]
    F32,
    /// float64.
    F64,
    /// Autocast to bfloat16.
    Bf16Mixed,
    /// Autocast to float16, with loss scaling.
    F16Mixed,
    /// bfloat16 variables.
    Bf16True,
    /// float16 variables.
    F16True,
}

impl Precision {
    /// Every accepted spelling, as Lightning writes them.
    pub const NAMES: &'static [&'static str] =
        &["32-true", "32", "64-true", "64", "bf16-mixed", "16-mixed", "bf16-true", "16-true"];

    /// Whether the step hooks run under autocast (Lightning's `use_amp`).
    pub fn is_mixed(self) -> bool {
        matches!(self, Precision::Bf16Mixed | Precision::F16Mixed)
    }

    /// The dtype autocast computes in, for the mixed precisions.
    pub fn autocast_kind(self) -> Option<Kind> {
        match self {
            Precision::Bf16Mixed => Some(Kind::BFloat16),
            Precision::F16Mixed => Some(Kind::Half),
            _ => None,
        }
    }

    /// The dtype the variables and floating-point inputs are converted to, when not float32.
    pub fn param_kind(self) -> Option<Kind> {
        match self {
            Precision::F64 => Some(Kind::Double),
            Precision::Bf16True => Some(Kind::BFloat16),
            Precision::F16True => Some(Kind::Half),
            _ => None,
        }
    }

    /// Checks that `device` can run this precision.
    pub(crate) fn check_device(self, device: Device) -> std::result::Result<(), ConfigError> {
        let unsupported = |why: &str| ConfigError::invalid("precision", format!("\"{self}\" {why}"));
        match (self, device) {
            (Precision::F16Mixed, Device::Cpu) => Err(unsupported(
                "needs a CUDA device (float16 autocast with loss scaling); on the CPU use \"bf16-mixed\"",
            )),
            (Precision::Bf16Mixed | Precision::F16Mixed, _) if !cfg!(lit_shim) && device == Device::Cpu => {
                Err(unsupported("needs lit's libtorch shim, which did not compile (see the build warnings)"))
            }
            _ => Ok(()),
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Precision::F32 => "32-true",
            Precision::F64 => "64-true",
            Precision::Bf16Mixed => "bf16-mixed",
            Precision::F16Mixed => "16-mixed",
            Precision::Bf16True => "bf16-true",
            Precision::F16True => "16-true",
        })
    }
}

impl FromStr for Precision {
    type Err = ConfigError;

    fn from_str(s: &str) -> std::result::Result<Self, ConfigError> {
        Ok(match s {
            "32-true" | "32" => Precision::F32,
            "64-true" | "64" => Precision::F64,
            "bf16-mixed" => Precision::Bf16Mixed,
            "16-mixed" => Precision::F16Mixed,
            "bf16-true" | "bf16" => Precision::Bf16True,
            "16-true" | "16" => Precision::F16True,
            other => {
                return Err(ConfigError::invalid(
                    "precision",
                    format!("unknown precision \"{other}\"; expected one of {}", Precision::NAMES.join(", ")),
                ));
            }
        })
    }
}

/// Autocast on `device`'s type to `kind` while the guard lives (nested guards restore the
/// previous state on drop). Created by the Trainer around the step hooks.
pub struct AutocastGuard {
    #[cfg_attr(not(lit_shim), allow(dead_code))]
    cuda: bool,
    #[cfg_attr(not(lit_shim), allow(dead_code))]
    previous: (i32, i32),
}

impl AutocastGuard {
    /// Enters autocast.
    pub fn enter(device: Device, kind: Kind) -> Result<Self> {
        let cuda = device.is_cuda();
        #[cfg(lit_shim)]
        {
            let previous = crate::shim::autocast_enter(cuda, scalar_type(kind))?;
            Ok(AutocastGuard { cuda, previous })
        }
        #[cfg(not(lit_shim))]
        {
            let _ = kind;
            Err(crate::Error::msg("autocast needs lit's libtorch shim, which did not compile"))
                .map(|()| AutocastGuard { cuda, previous: (0, 0) })
        }
    }

    /// Whether autocast is on for the CPU (`cuda == false`) or CUDA.
    pub fn is_enabled(cuda: bool) -> bool {
        #[cfg(lit_shim)]
        {
            crate::shim::autocast_is_enabled(cuda)
        }
        #[cfg(not(lit_shim))]
        {
            let _ = cuda;
            false
        }
    }
}

impl Drop for AutocastGuard {
    fn drop(&mut self) {
        #[cfg(lit_shim)]
        {
            if let Err(e) = crate::shim::autocast_exit(self.cuda, self.previous) {
                tracing::error!(target: "lit", "{e}");
            }
        }
    }
}

/// c10's ScalarType number of a floating-point `Kind`.
#[cfg(lit_shim)]
fn scalar_type(kind: Kind) -> i32 {
    match kind {
        Kind::Half => 5,
        Kind::Float => 6,
        Kind::Double => 7,
        Kind::BFloat16 => 15,
        _ => 6,
    }
}

/// Loss scaling for float16 training (PyTorch's `torch.amp.GradScaler`): the loss is multiplied by
/// a scale before `backward` so that small gradients survive float16; the gradients are divided
/// by it before clipping and the step; a step whose gradients hold inf or NaN is skipped and the
/// scale shrinks by `backoff_factor`; after `growth_interval` good steps in a row it grows by
/// `growth_factor`.
pub struct GradScaler {
    scale: Tensor,
    growth_tracker: Tensor,
    growth_factor: f64,
    backoff_factor: f64,
    growth_interval: i64,
    /// inf/NaN found by the last `unscale`, not yet consumed by `step`.
    found_inf: Option<Tensor>,
    /// inf/NaN found in any step since the last `update`.
    found_since_update: Option<Tensor>,
    skipped: u64,
}

impl fmt::Debug for GradScaler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GradScaler").field("scale", &self.scale()).field("skipped_steps", &self.skipped).finish()
    }
}

impl GradScaler {
    /// PyTorch's defaults: initial scale 2^16, growth ×2 every 2000 good steps, backoff ×0.5.
    pub fn new(device: Device) -> Self {
        Self::with_options(device, 65536.0, 2.0, 0.5, 2000)
    }

    /// A scaler with explicit options.
    pub fn with_options(
        device: Device,
        init_scale: f64,
        growth_factor: f64,
        backoff_factor: f64,
        growth_interval: i64,
    ) -> Self {
        GradScaler {
            scale: Tensor::from_slice(&[init_scale as f32]).to_device(device),
            growth_tracker: Tensor::from_slice(&[0i32]).to_device(device),
            growth_factor,
            backoff_factor,
            growth_interval,
            found_inf: None,
            found_since_update: None,
            skipped: 0,
        }
    }

    /// The current scale (reads it from the device).
    pub fn scale(&self) -> f64 {
        self.scale.double_value(&[0])
    }

    /// How many steps were skipped because of inf/NaN gradients.
    pub fn skipped_steps(&self) -> u64 {
        self.skipped
    }

    /// `loss` multiplied by the scale (what to call `backward` on).
    pub fn scale_loss(&self, loss: &Tensor) -> Tensor {
        loss * self.scale.to_kind(loss.kind()).reshape([])
    }

    /// Divides the gradients of `optimizer`'s parameters by the scale, in place, and records
    /// whether any of them holds inf or NaN. Clipping comes after this.
    pub fn unscale(&mut self, optimizer: &mut dyn Optimizer) -> Result<()> {
        if self.found_inf.is_some() {
            return Ok(());
        }
        let inv_scale = self.scale.reciprocal();
        let mut found = Tensor::zeros([1], (Kind::Float, self.scale.device()));
        tch::no_grad(|| -> Result<()> {
            for mut grad in crate::optim::grads(optimizer.param_groups()) {
                grad.f_internal_amp_non_finite_check_and_unscale(&mut found, &inv_scale)?;
            }
            Ok(())
        })?;
        self.found_since_update = Some(match self.found_since_update.take() {
            Some(f) => f + &found,
            None => found.shallow_clone(),
        });
        self.found_inf = Some(found);
        Ok(())
    }

    /// Unscales (unless `unscale` already ran for this step) and steps `optimizer` unless a
    /// gradient holds inf or NaN. Returns whether it stepped.
    pub fn step(&mut self, optimizer: &mut dyn Optimizer) -> Result<bool> {
        self.unscale(optimizer)?;
        if self.take_found_inf() == Some(true) {
            return Ok(false);
        }
        optimizer.step();
        Ok(true)
    }

    /// Whether the last `unscale` found inf or NaN (reading it syncs with the device), counting a
    /// skipped step if so; `None` when nothing was unscaled since the last step.
    pub(crate) fn take_found_inf(&mut self) -> Option<bool> {
        let found = self.found_inf.take()?.double_value(&[0]) > 0.0;
        if found {
            self.skipped += 1;
            tracing::debug!(target: "lit", scale = self.scale(), "inf/NaN gradients: optimizer step skipped");
        }
        Some(found)
    }

    /// Adjusts the scale after a step: back off if any gradient since the last update held
    /// inf/NaN, grow after `growth_interval` clean steps.
    pub fn update(&mut self) -> Result<()> {
        self.found_inf = None;
        let Some(found) = self.found_since_update.take() else { return Ok(()) };
        let _ = self.scale.f_internal_amp_update_scale_(
            &self.growth_tracker,
            &found,
            self.growth_factor,
            self.backoff_factor,
            self.growth_interval,
        )?;
        Ok(())
    }

    /// The state saved in checkpoints: the scale and the count of clean steps.
    pub fn state_tensors(&self) -> [(&'static str, Tensor); 2] {
        [("scale", self.scale.to_device(Device::Cpu)), ("growth_tracker", self.growth_tracker.to_device(Device::Cpu))]
    }

    /// Restores what `state_tensors` returned.
    pub fn load_state_tensors(&mut self, scale: &Tensor, growth_tracker: &Tensor) -> Result<()> {
        tch::no_grad(|| {
            self.scale.f_copy_(&scale.f_to_kind(Kind::Float)?.f_reshape([1])?)?;
            self.growth_tracker.f_copy_(&growth_tracker.f_to_kind(Kind::Int)?.f_reshape([1])?)
        })?;
        Ok(())
    }
}

/// Autograd's anomaly detection on or off (`torch.autograd.set_detect_anomaly`).
pub(crate) fn set_detect_anomaly(enabled: bool) -> Result<()> {
    #[cfg(lit_shim)]
    {
        crate::shim::set_detect_anomaly(enabled)
    }
    #[cfg(not(lit_shim))]
    {
        if enabled {
            crate::warning::warn("`detect_anomaly` needs lit's libtorch shim, which did not compile; ignored");
        }
        Ok(())
    }
}

/// Applies the Trainer's `deterministic`, `deterministic_warn_only` and `benchmark` flags to
/// libtorch's global context.
pub(crate) fn set_global_flags(deterministic: bool, warn_only: bool, benchmark: Option<bool>) -> Result<()> {
    #[cfg(lit_shim)]
    {
        if deterministic {
            crate::shim::set_deterministic(deterministic, warn_only)?;
        }
        if let Some(benchmark) = benchmark {
            crate::shim::set_cudnn_benchmark(benchmark)?;
        }
        Ok(())
    }
    #[cfg(not(lit_shim))]
    {
        if deterministic || benchmark.is_some() {
            crate::warning::warn(
                "`deterministic` and `benchmark` need lit's libtorch shim, which did not compile; ignored",
            );
        }
        let _ = warn_only;
        Ok(())
    }
}
