//! Trial fits: a `fit` run for what it measures (the tuner's learning-rate range test), after
//! which the Trainer, the module's weights and the random generator are as they were, as
//! Lightning's tuner leaves them by restoring a checkpoint saved first.

use std::collections::HashMap;

use tch::{Device, Kind, Tensor, nn};

use super::{Trainer, TrainerConfig, run_state};
use crate::callback::Callback;
use crate::error::Result;
use crate::module::LightningModule;

/// A copy of a `VarStore`'s variables (values, dtypes, `requires_grad`) and of its device and
/// default kind, to put back.
struct Weights {
    device: Device,
    kind: Kind,
    values: HashMap<String, (Tensor, bool)>,
}

impl Weights {
    fn of(vs: &nn::VarStore) -> Self {
        let values = tch::no_grad(|| {
            vs.variables()
                .into_iter()
                .map(|(name, v)| {
                    let requires_grad = v.requires_grad();
                    (name, (v.detach().copy(), requires_grad))
                })
                .collect()
        });
        Weights { device: vs.device(), kind: vs.kind(), values }
    }

    /// Puts the copies back: in place where the variable kept its device and dtype (views of it
    /// stay views), otherwise as its new data.
    fn restore(self, vs: &mut nn::VarStore) {
        if vs.device() != self.device {
            vs.set_device(self.device);
        }
        if vs.kind() != self.kind {
            vs.set_kind(self.kind);
        }
        tch::no_grad(|| {
            for (name, mut variable) in vs.variables() {
                let Some((saved, requires_grad)) = self.values.get(&name) else { continue };
                if variable.device() == saved.device() && variable.kind() == saved.kind() {
                    variable.copy_(saved);
                } else {
                    variable.set_data(saved);
                }
                let _ = variable.set_requires_grad(*requires_grad);
            }
        });
    }
}

/// What a trial sets aside and puts back.
struct SetAside {
    config: TrainerConfig,
    callbacks: Vec<Box<dyn Callback>>,
    cx: crate::ctx::State,
    hparams_logged: bool,
}

impl Trainer {
    /// Runs `run` (a `fit` of `model`) as a trial: with `callbacks` instead of the Trainer's (and
    /// none of the module's), no loggers, no progress bar, no model summary, no profiler, no
    /// checkpoint on Ctrl-C or a panic, and the configuration changed by `configure`; the loop
    /// counters (epoch, step) go on from the Trainer's. Afterwards, whatever the result, the
    /// Trainer's state (counters, optimizers, schedulers, metrics, callbacks, loggers,
    /// configuration, stop request), the module's variables and the CPU random generator are as
    /// before.
    /// Returns `run`'s result and the trial's callbacks.
    pub(crate) fn trial<M: LightningModule, T>(
        &mut self,
        model: &mut M,
        callbacks: Vec<Box<dyn Callback>>,
        configure: impl FnOnce(&mut TrainerConfig),
        run: impl FnOnce(&mut Trainer, &mut M) -> Result<T>,
    ) -> Result<(T, Vec<Box<dyn Callback>>)> {
        // Joined first, so that the process group (and what rank > 0 turns off) lands in the
        // Trainer's own state, which the trial borrows it from.
        self.join_process_group()?;
        let weights = Weights::of(model.var_store());
        let rng = crate::rng::cpu_state()?;
        let stop_requested = self.cx.stop.is_requested();

        let mut config = self.config.clone();
        config.enable_model_summary = false;
        config.profiler = None;
        config.handle_sigint = false;
        configure(&mut config);
        // The state's device: under DDP on CUDA it is this process's `cuda:LOCAL_RANK`.
        let mut cx = run_state(&config, self.cx.device, self.cx.stop.clone());
        cx.trial = true;
        cx.current_epoch = self.cx.current_epoch;
        cx.next_epoch = self.cx.next_epoch;
        cx.global_step = self.cx.global_step;
        cx.total_batch_idx = self.cx.total_batch_idx;
        cx.local_rank = self.cx.local_rank;
        cx.process_group = self.cx.process_group.take();
        if cx.global_rank() != 0 {
            cx.progress = crate::progress::Progress::silent();
        }
        let aside = SetAside {
            config: std::mem::replace(&mut self.config, config),
            callbacks: std::mem::replace(&mut self.callbacks, callbacks),
            cx: std::mem::replace(&mut self.cx, cx),
            // The trial has no loggers: the hyper-parameters go to the Trainer's with its first
            // real fit.
            hparams_logged: std::mem::replace(&mut self.hparams_logged, true),
        };

        let result = run(self, model);

        let mut trial_cx = std::mem::replace(&mut self.cx, aside.cx);
        self.cx.process_group = trial_cx.process_group.take();
        self.config = aside.config;
        self.hparams_logged = aside.hparams_logged;
        let trial_callbacks = std::mem::replace(&mut self.callbacks, aside.callbacks);
        // The stop flag is shared with the trial (a stop handle reaches it): as it was.
        if stop_requested {
            self.cx.stop.request();
        } else {
            self.cx.stop.clear();
        }
        weights.restore(model.var_store_mut());
        let rng = rng.map_or(Ok(()), |state| crate::rng::set_cpu_state(&state));
        let out = result?;
        rng?;
        Ok((out, trial_callbacks))
    }
}
