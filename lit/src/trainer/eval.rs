//! The evaluation loop, shared by validation and test through [`EvalStage`].

use super::config::Limit;
use super::events::Event;
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
    cx.state.hook = name;
    hooks(cx)?;
    cx.state.hook = "";
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

/// The batches of several loaders together (`None` when a loader's length is unknown).
pub(super) fn total(counts: &[usize]) -> Option<usize> {
    counts.iter().try_fold(0usize, |a, &n| (n != usize::MAX).then(|| a + n))
}

impl<M: LightningModule> Run<'_, M> {
    /// Runs `body(run, batch, batch_idx, dataloader_idx)` on the first `counts[i]` batches of
    /// each loader `i` in turn, with the context's loader index set; returns the batches run per
    /// loader. The evaluation and prediction loops are this with their own batch hooks.
    pub(super) fn each_batch<B: Batch>(
        &mut self,
        loaders: &mut LoaderVec<'_, B>,
        counts: &[usize],
        mut body: impl FnMut(&mut Self, B, usize, usize) -> Result<()>,
    ) -> Result<Vec<usize>> {
        let epoch = self.cx.current_epoch;
        let mut batches_run = vec![0; loaders.len()];
        for (dl, loader) in loaders.iter_mut().enumerate() {
            self.cx.dataloader_idx = dl;
            for (i, batch) in loader.iter(epoch)?.take(counts[dl]).enumerate() {
                batches_run[dl] = i + 1;
                self.cx.batch_idx = Some(i);
                body(self, batch?, i, dl)?;
            }
        }
        self.cx.batch_idx = None;
        self.cx.dataloader_idx = 0;
        Ok(batches_run)
    }

    /// A step hook (`training_step`, `validation_step`, …) under autocast (a mixed precision),
    /// timed by the simple profiler as `name`.
    pub(super) fn step_hook<T>(
        &mut self,
        name: &'static str,
        step: impl FnOnce(&mut M, &mut crate::ctx::Ctx) -> Result<T>,
    ) -> Result<T> {
        let started = self.cx.profile_start();
        self.cx.hook = name;
        let out = {
            let _autocast = self.cx.autocast()?;
            step(self.model, ctx!(self))?
        };
        self.cx.hook = "";
        self.cx.profile_end(name, started);
        Ok(out)
    }

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
        let mut outputs: Vec<Vec<StepOutput>> = loaders.iter().map(|_| Vec::new()).collect();
        S::start(self.model, self.callbacks, ctx!(self))?;
        super::hook!(self, on_epoch_start());
        S::epoch_start(self.model, self.callbacks, ctx!(self))?;
        self.cx.check()?;
        self.cx.num_dataloaders = loaders.len();
        let counts = loaders
            .iter()
            .map(|l| Ok(limit.of(l.len(), option)?.min(configured.of(l.len(), option)?)))
            .collect::<Result<Vec<usize>>>()?;
        let label = match self.cx.running {
            RunningStage::SanityChecking => "Sanity Checking",
            RunningStage::Testing => "Testing",
            _ => "Validation",
        };
        self.emit(Event::LoopStart { label: label.into(), total: total(&counts) })?;
        let batches_run = self.each_batch(loaders, &counts, |run, batch, i, dl| {
            run.cx.in_step = true;
            S::batch_start(run.model, run.callbacks, &batch, i, dl, ctx!(run))?;
            let batch = run.transfer(batch, dl)?;
            let held = batch.shallow_clone();
            let out = run.step_hook(S::STEP, |m, cx| S::step(m, batch, i, dl, cx))?;
            let out = match out {
                Some(out) => Some(S::step_end(run.model, out, ctx!(run))?),
                None => None,
            };
            S::batch_end(run.model, run.callbacks, out.as_ref(), &held, i, dl, ctx!(run))?;
            run.cx.in_step = false;
            run.cx.check()?;
            run.emit(Event::EvalBatchEnd { step: run.cx.eval_step_base + i })?;
            if keep {
                outputs[dl].extend(out);
            }
            Ok(())
        })?;
        if self.cx.running != RunningStage::SanityChecking {
            self.cx.eval_step_base += batches_run.into_iter().max().unwrap_or(0);
        }
        if keep {
            S::outputs_end(self.model, outputs, ctx!(self))?;
        }
        S::epoch_end(self.model, self.callbacks, ctx!(self))?;
        super::hook!(self, on_epoch_end());
        self.cx.metrics.end_epoch(false, self.cx.process_group.as_ref())?;
        self.emit(Event::EvalEpochEnd)?;
        S::end(self.model, self.callbacks, ctx!(self))?;
        if self.cx.running == RunningStage::SanityChecking {
            self.cx.discard_predictions();
        } else {
            for file in self.cx.flush_predictions()? {
                tracing::info!(target: "lit", file = %file.display(), "predictions written");
            }
        }
        self.cx.num_dataloaders = 1;
        self.cx.check()
    }
}
