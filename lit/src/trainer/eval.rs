//! The evaluation loop, shared by validation and test through [`EvalStage`].

use super::config::Limit;
use super::{LoaderVec, Run, ctx};
use crate::callback::Callback;
use crate::ctx::{Ctx, RunningStage};
use crate::data::Batch;
use crate::error::Result;
use crate::module::{LightningModule, StepOutput};

/// The hooks of one evaluation stage (validation or test), so one loop serves both.
pub(super) trait EvalStage<M: LightningModule> {
    type Batch: Batch;
    /// The step hook's name (for the profiler).
    const STEP: &'static str;
    fn has_step() -> bool;
    fn has_epoch_end() -> bool;
    fn limit(config: &super::TrainerConfig) -> (Limit, &'static str);
    fn model_eval(m: &mut M, cx: &mut Ctx) -> Result<()>;
    fn model_train(m: &mut M, cx: &mut Ctx) -> Result<()>;
    fn start(m: &mut M, cbs: &mut [Box<dyn Callback>], cx: &mut Ctx) -> Result<()>;
    fn end(m: &mut M, cbs: &mut [Box<dyn Callback>], cx: &mut Ctx) -> Result<()>;
    fn epoch_start(m: &mut M, cbs: &mut [Box<dyn Callback>], cx: &mut Ctx) -> Result<()>;
    fn epoch_end(m: &mut M, cbs: &mut [Box<dyn Callback>], cx: &mut Ctx) -> Result<()>;
    fn batch_start(
        m: &mut M,
        cbs: &mut [Box<dyn Callback>],
        b: &Self::Batch,
        i: usize,
        dl: usize,
        cx: &mut Ctx,
    ) -> Result<()>;
    fn step(m: &mut M, b: Self::Batch, i: usize, dl: usize, cx: &mut Ctx) -> Result<Option<StepOutput>>;
    fn step_end(m: &mut M, out: StepOutput, cx: &mut Ctx) -> Result<StepOutput>;
    #[allow(clippy::too_many_arguments)]
    fn batch_end(
        m: &mut M,
        cbs: &mut [Box<dyn Callback>],
        out: Option<&StepOutput>,
        b: &Self::Batch,
        i: usize,
        dl: usize,
        cx: &mut Ctx,
    ) -> Result<()>;
    fn outputs_end(m: &mut M, outputs: Vec<Vec<StepOutput>>, cx: &mut Ctx) -> Result<()>;
}

/// Runs `hooks` (a hook on the callbacks and the module), timed by the simple profiler as `name`.
fn timed(cx: &mut Ctx, name: &'static str, hooks: impl FnOnce(&mut Ctx) -> Result<()>) -> Result<()> {
    let started = cx.state.profile_start();
    hooks(cx)?;
    cx.state.profile_end(name, started);
    Ok(())
}

/// Generates an [`EvalStage`] from its hooks, each named by its role, so that two hooks of the
/// same signature cannot be swapped unnoticed. The `Hooks` flags are named after their hooks.
macro_rules! eval_stage {
    ($ty:ident {
        batch: $batch:ident,
        limit: $limit:ident,
        model_eval: $eval:ident,
        model_train: $train:ident,
        start: $start:ident,
        end: $end:ident,
        epoch_start: $epoch_start:ident,
        epoch_end: $epoch_end:ident,
        batch_start: $batch_start:ident,
        step: $step:ident,
        step_end: $step_end:ident,
        batch_end: $batch_end:ident,
        outputs_end: $outputs_end:ident $(,)?
    }) => {
        pub(super) struct $ty;
        impl<M: LightningModule> EvalStage<M> for $ty {
            type Batch = M::$batch;
            const STEP: &'static str = stringify!($step);
            fn has_step() -> bool {
                M::HOOKS.$step
            }
            fn has_epoch_end() -> bool {
                M::HOOKS.$outputs_end
            }
            fn limit(config: &super::TrainerConfig) -> (Limit, &'static str) {
                (config.$limit, stringify!($limit))
            }
            fn model_eval(m: &mut M, cx: &mut Ctx) -> Result<()> {
                m.$eval(cx)
            }
            fn model_train(m: &mut M, cx: &mut Ctx) -> Result<()> {
                m.$train(cx)
            }
            fn start(m: &mut M, cbs: &mut [Box<dyn Callback>], cx: &mut Ctx) -> Result<()> {
                timed(cx, stringify!($start), |cx| {
                    cbs.iter_mut().try_for_each(|c| c.$start(cx)).and_then(|()| m.$start(cx))
                })
            }
            fn end(m: &mut M, cbs: &mut [Box<dyn Callback>], cx: &mut Ctx) -> Result<()> {
                timed(cx, stringify!($end), |cx| cbs.iter_mut().try_for_each(|c| c.$end(cx)).and_then(|()| m.$end(cx)))
            }
            fn epoch_start(m: &mut M, cbs: &mut [Box<dyn Callback>], cx: &mut Ctx) -> Result<()> {
                timed(cx, stringify!($epoch_start), |cx| {
                    cbs.iter_mut().try_for_each(|c| c.$epoch_start(cx)).and_then(|()| m.$epoch_start(cx))
                })
            }
            fn epoch_end(m: &mut M, cbs: &mut [Box<dyn Callback>], cx: &mut Ctx) -> Result<()> {
                timed(cx, stringify!($epoch_end), |cx| {
                    cbs.iter_mut().try_for_each(|c| c.$epoch_end(cx)).and_then(|()| m.$epoch_end(cx))
                })
            }
            fn batch_start(
                m: &mut M,
                cbs: &mut [Box<dyn Callback>],
                b: &Self::Batch,
                i: usize,
                dl: usize,
                cx: &mut Ctx,
            ) -> Result<()> {
                timed(cx, stringify!($batch_start), |cx| {
                    cbs.iter_mut().try_for_each(|c| c.$batch_start(i, dl, cx))?;
                    m.$batch_start(b, i, dl, cx)
                })
            }
            fn step(m: &mut M, b: Self::Batch, i: usize, dl: usize, cx: &mut Ctx) -> Result<Option<StepOutput>> {
                m.$step(b, i, dl, cx)
            }
            fn step_end(m: &mut M, out: StepOutput, cx: &mut Ctx) -> Result<StepOutput> {
                m.$step_end(out, cx)
            }
            fn batch_end(
                m: &mut M,
                cbs: &mut [Box<dyn Callback>],
                out: Option<&StepOutput>,
                b: &Self::Batch,
                i: usize,
                dl: usize,
                cx: &mut Ctx,
            ) -> Result<()> {
                timed(cx, stringify!($batch_end), |cx| {
                    cbs.iter_mut().try_for_each(|c| c.$batch_end(out, i, dl, cx))?;
                    m.$batch_end(out, b, i, dl, cx)
                })
            }
            fn outputs_end(m: &mut M, outputs: Vec<Vec<StepOutput>>, cx: &mut Ctx) -> Result<()> {
                m.$outputs_end(outputs, cx)
            }
        }
    };
}

eval_stage!(Validation {
    batch: ValBatch,
    limit: limit_val_batches,
    model_eval: on_validation_model_eval,
    model_train: on_validation_model_train,
    start: on_validation_start,
    end: on_validation_end,
    epoch_start: on_validation_epoch_start,
    epoch_end: on_validation_epoch_end,
    batch_start: on_validation_batch_start,
    step: validation_step,
    step_end: validation_step_end,
    batch_end: on_validation_batch_end,
    outputs_end: validation_epoch_end,
});
eval_stage!(Test {
    batch: TestBatch,
    limit: limit_test_batches,
    model_eval: on_test_model_eval,
    model_train: on_test_model_train,
    start: on_test_start,
    end: on_test_end,
    epoch_start: on_test_epoch_start,
    epoch_end: on_test_epoch_end,
    batch_start: on_test_batch_start,
    step: test_step,
    step_end: test_step_end,
    batch_end: on_test_batch_end,
    outputs_end: test_epoch_end,
});

impl<M: LightningModule> Run<'_, M> {
    /// A full evaluation loop (validate or test).
    pub(super) fn eval<S: EvalStage<M>>(
        &mut self,
        loaders: &mut LoaderVec<'_, S::Batch>,
        running: RunningStage,
    ) -> Result<()> {
        if !S::has_step() {
            let hook = if running == RunningStage::Testing { "test_step" } else { "validation_step" };
            return Err(crate::Error::hook(hook, "the module does not implement it"));
        }
        self.eval_limited::<S>(loaders, running, None)
    }

    /// An evaluation loop over every loader; `limit` overrides the configured batch limit (the
    /// sanity check's). Autograd is off inside, back on after `on_*_model_train`.
    pub(super) fn eval_limited<S: EvalStage<M>>(
        &mut self,
        loaders: &mut LoaderVec<'_, S::Batch>,
        running: RunningStage,
        limit: Option<Limit>,
    ) -> Result<()> {
        self.cx.running = running;
        S::model_eval(self.model, ctx!(self))?;
        self.cx.grad_enabled = false;
        let result = tch::no_grad(|| {
            self.eval_epoch::<S>(loaders, limit)?;
            S::model_train(self.model, ctx!(self))
        });
        self.cx.grad_enabled = true;
        result
    }

    fn eval_epoch<S: EvalStage<M>>(
        &mut self,
        loaders: &mut LoaderVec<'_, S::Batch>,
        limit: Option<Limit>,
    ) -> Result<()> {
        let (configured, option) = S::limit(self.config);
        let limit = limit.unwrap_or(configured);
        let keep = S::has_epoch_end();
        let mut outputs: Vec<Vec<StepOutput>> = Vec::new();
        S::start(self.model, self.callbacks, ctx!(self))?;
        super::hook!(self, on_epoch_start());
        S::epoch_start(self.model, self.callbacks, ctx!(self))?;
        self.cx.check()?;
        self.cx.num_dataloaders = loaders.len();
        let epoch = self.cx.current_epoch;
        let mut counts = Vec::with_capacity(loaders.len());
        for loader in loaders.iter() {
            counts.push(limit.of(loader.len(), option)?.min(configured.of(loader.len(), option)?));
        }
        let total = counts.iter().try_fold(0usize, |a, &n| (n != usize::MAX).then(|| a + n));
        let label = match self.cx.running {
            RunningStage::SanityChecking => "Sanity Checking",
            RunningStage::Testing => "Testing",
            _ => "Validation",
        };
        self.cx.progress.start(label, total);
        let mut batches_run = Vec::with_capacity(loaders.len());
        for (dl, loader) in loaders.iter_mut().enumerate() {
            self.cx.dataloader_idx = dl;
            let n = counts[dl];
            let mut kept = Vec::new();
            batches_run.push(0);
            for (i, batch) in loader.iter(epoch)?.take(n).enumerate() {
                batches_run[dl] = i + 1;
                let batch = batch?;
                self.cx.in_step = true;
                S::batch_start(self.model, self.callbacks, &batch, i, dl, ctx!(self))?;
                let batch = self.transfer(batch, dl)?;
                let held = batch.shallow_clone();
                let started = self.cx.profile_start();
                let out = {
                    let _autocast = self.cx.autocast()?;
                    S::step(self.model, batch, i, dl, ctx!(self))?
                };
                self.cx.profile_end(S::STEP, started);
                let out = match out {
                    Some(out) => Some(S::step_end(self.model, out, ctx!(self))?),
                    None => None,
                };
                S::batch_end(self.model, self.callbacks, out.as_ref(), &held, i, dl, ctx!(self))?;
                self.cx.in_step = false;
                self.cx.check()?;
                self.flush_eval_step(self.cx.eval_step_base + i)?;
                let (progress, metrics) = (&mut self.cx.progress, &self.cx.metrics);
                let model = &*self.model;
                progress.advance(|| model.get_progress_bar_dict(metrics.progress_bar_metrics()));
                if keep {
                    kept.extend(out);
                }
            }
            outputs.push(kept);
        }
        self.cx.dataloader_idx = 0;
        if self.cx.running != RunningStage::SanityChecking {
            self.cx.eval_step_base += batches_run.into_iter().max().unwrap_or(0);
        }
        if keep {
            S::outputs_end(self.model, outputs, ctx!(self))?;
        }
        S::epoch_end(self.model, self.callbacks, ctx!(self))?;
        super::hook!(self, on_epoch_end());
        self.cx.metrics.end_epoch(false, self.cx.process_group.as_ref())?;
        let sanity = self.cx.running == RunningStage::SanityChecking;
        if !sanity {
            let step = if self.cx.stage == crate::Stage::Fit {
                self.cx.global_step.saturating_sub(1)
            } else {
                self.cx.global_step
            };
            self.flush_logs(step)?;
        }
        let bar = self.model.get_progress_bar_dict(self.cx.metrics.progress_bar_metrics());
        self.cx.progress.finish(bar, self.cx.stage != crate::Stage::Fit);
        S::end(self.model, self.callbacks, ctx!(self))?;
        if self.cx.running == RunningStage::SanityChecking {
            self.cx.discard_predictions();
        } else {
            for file in self.cx.flush_predictions()? {
                tracing::info!(target: "lit", file = %file.display(), "predictions written");
            }
        }
        self.cx.num_dataloaders = 1;
        self.cx.check()?;
        if self.cx.running != RunningStage::SanityChecking && tracing::enabled!(target: "lit", tracing::Level::INFO) {
            tracing::info!(target: "lit", stage = ?self.cx.running, metrics = ?self.cx.metrics.logged_metrics(), "evaluation done");
        }
        Ok(())
    }
}
