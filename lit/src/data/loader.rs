//! Loaders: the [`Loader`] trait the loops read batches from, [`DataLoader`] (sampling,
//! batching, collate, worker threads with prefetch) and [`Batches`] (pre-made batches).

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, bounded, unbounded};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use super::batch::Batch;
use super::dataset::{Dataset, Tensors};
use crate::error::{DataError, Error, Result};

/// An iterator over one epoch's batches.
pub type BatchIter<'a, B> = Box<dyn Iterator<Item = Result<B>> + 'a>;

/// A source of batches, read once per epoch by the loops.
pub trait Loader: Send {
    /// What one batch is.
    type Batch: Batch;

    /// The number of batches per epoch, when known.
    fn len(&self) -> Option<usize>;

    /// Whether the loader is known to yield no batch.
    fn is_empty(&self) -> bool {
        self.len() == Some(0)
    }

    /// The batches of epoch `epoch` (the epoch seeds shuffling, so each epoch has its own order
    /// and a resumed run sees the same one).
    fn iter(&mut self, epoch: usize) -> Result<BatchIter<'_, Self::Batch>>;

    /// The batches of epoch `epoch` from batch `start` on, in the same order as `iter`: where a
    /// resumed run continues. The default skips `start` batches.
    fn iter_from(&mut self, epoch: usize, start: usize) -> Result<BatchIter<'_, Self::Batch>> {
        Ok(Box::new(self.iter(epoch)?.skip(start)))
    }

    /// Distributed training: from now on yield only process `rank`'s share of `world` (what
    /// PyTorch's `DistributedSampler` does; the Trainer calls it). The default shares nothing:
    /// every process sees every batch.
    fn shard(&mut self, rank: usize, world: usize) {
        let _ = (rank, world);
    }

    /// `overfit_batches`: from now on yield the batches in their stored order (the Trainer
    /// calls it). The default does nothing: a loader that does not shuffle needs nothing.
    fn disable_shuffle(&mut self) {}
}

impl<B: Batch> Loader for Box<dyn Loader<Batch = B>> {
    type Batch = B;
    fn len(&self) -> Option<usize> {
        (**self).len()
    }
    fn iter(&mut self, epoch: usize) -> Result<BatchIter<'_, B>> {
        (**self).iter(epoch)
    }
    fn iter_from(&mut self, epoch: usize, start: usize) -> Result<BatchIter<'_, B>> {
        (**self).iter_from(epoch, start)
    }
    fn shard(&mut self, rank: usize, world: usize) {
        (**self).shard(rank, world)
    }
    fn disable_shuffle(&mut self) {
        (**self).disable_shuffle()
    }
}

/// Batches made ahead of time and kept in memory; each epoch yields them in order, shared
/// rather than copied.
pub struct Batches<B> {
    batches: Vec<B>,
    shard: Option<(usize, usize)>,
}

impl<B: Batch> Batches<B> {
    /// A loader over these batches.
    pub fn new(batches: Vec<B>) -> Self {
        Batches { batches, shard: None }
    }
}

impl<B: Batch> Loader for Batches<B> {
    type Batch = B;
    fn len(&self) -> Option<usize> {
        Some(match self.shard {
            Some((rank, world)) => (self.batches.len() + world - 1 - rank) / world,
            None => self.batches.len(),
        })
    }
    fn iter(&mut self, epoch: usize) -> Result<BatchIter<'_, B>> {
        self.iter_from(epoch, 0)
    }
    fn iter_from(&mut self, _epoch: usize, start: usize) -> Result<BatchIter<'_, B>> {
        let (rank, world) = self.shard.unwrap_or((0, 1));
        Ok(Box::new(self.batches.iter().skip(rank).step_by(world).skip(start).map(|b| Ok(b.shallow_clone()))))
    }
    /// Process `rank` gets batches `rank`, `rank + world`, ….
    fn shard(&mut self, rank: usize, world: usize) {
        self.shard = Some((rank, world.max(1)));
    }
}

type CollateFn<D, B> = dyn Fn(&D, &[usize]) -> Result<B> + Send + Sync;

/// Batches from a [`Dataset`], as PyTorch's `DataLoader`: sequential or seeded random order (a new
/// order every epoch), `batch_size`, `drop_last`, a collate step, and `num_workers` threads that
/// prepare up to `prefetch_factor` batches each ahead of the training step.
///
/// The worker threads start with the first epoch and serve every later one
/// (`persistent_workers`, on by default); their tensor work runs single-threaded, so that they
/// never compete with the training thread's intra-op threads for the cores. A tensor dataset's
/// batch is gathered in one indexed read ([`Dataset::get_stacked`]); such a batch leaves nothing
/// for workers to overlap, so with the default collate the loader then reads it in the training
/// thread whatever `num_workers` says (handing it over would cost more than the read).
///
/// A dataset that fails or panics ends the epoch with a [`DataError`]; workers never hang.
pub struct DataLoader<D: Dataset, B = <D as Dataset>::Item> {
    dataset: Arc<D>,
    collate: Arc<CollateFn<D, B>>,
    batch_size: usize,
    shuffle: bool,
    drop_last: bool,
    seed: u64,
    num_workers: usize,
    prefetch_factor: usize,
    persistent_workers: bool,
    shard: Option<(usize, usize)>,
    workers: Option<Workers<B>>,
    /// Made by `new` (the default collate), whose batches a dataset with `get_stacked` gathers
    /// in one indexed read.
    default_collate: bool,
}

fn fetch<D: Dataset>(dataset: &D, indices: &[usize]) -> Result<Vec<D::Item>> {
    indices.iter().map(|&i| dataset.get(i)).collect()
}

impl<D: Dataset> DataLoader<D>
where
    D::Item: Tensors + Batch,
{
    /// A loader that stacks samples into batches (batch size 1, in order, no workers: set the
    /// rest with the builder methods).
    pub fn new(dataset: D) -> Self {
        let mut loader = Self::with_collate_fn(
            dataset,
            Arc::new(|d: &D, indices: &[usize]| match d.get_stacked(indices) {
                Some(batch) => batch,
                None => Tensors::stack(fetch(d, indices)?),
            }),
        );
        loader.default_collate = true;
        loader
    }
}

impl<D: Dataset, B: Batch> DataLoader<D, B> {
    fn with_collate_fn(dataset: D, collate: Arc<CollateFn<D, B>>) -> Self {
        DataLoader {
            dataset: Arc::new(dataset),
            collate,
            batch_size: 1,
            shuffle: false,
            drop_last: false,
            seed: 0,
            num_workers: 0,
            prefetch_factor: 2,
            persistent_workers: true,
            shard: None,
            workers: None,
            default_collate: false,
        }
    }

    /// A loader whose batches are made from the samples by `collate`.
    pub fn with_collate<F>(dataset: D, collate: F) -> Self
    where
        F: Fn(Vec<D::Item>) -> Result<B> + Send + Sync + 'static,
    {
        Self::with_collate_fn(dataset, Arc::new(move |d: &D, indices: &[usize]| collate(fetch(d, indices)?)))
    }

    /// Samples per batch; 0 is an error when the loader is first iterated.
    pub fn batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size;
        self
    }

    /// Visit samples in a random order, a new one each epoch, determined by the seed.
    pub fn shuffle(mut self, shuffle: bool) -> Self {
        self.shuffle = shuffle;
        self
    }

    /// The seed of the shuffled order (default 0); epoch `e` uses `seed + e`.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Drop the last batch of an epoch when it is smaller than `batch_size`.
    pub fn drop_last(mut self, drop_last: bool) -> Self {
        self.drop_last = drop_last;
        self
    }

    /// Threads that load batches in the background (0: load in the training thread).
    pub fn num_workers(mut self, num_workers: usize) -> Self {
        self.num_workers = num_workers;
        self
    }

    /// Whether a batch is one indexed read of the dataset (the default collate over a dataset
    /// with [`Dataset::get_stacked`]), which workers could not overlap with anything.
    fn reads_batches_at_once(&self) -> bool {
        let at_once = self.default_collate && !self.dataset.is_empty() && self.dataset.get_stacked(&[0]).is_some();
        if at_once && self.num_workers > 0 && self.workers.is_none() {
            tracing::debug!(
                target: "lit",
                num_workers = self.num_workers,
                "the dataset gathers each batch in one indexed read: the loader reads batches in the training thread"
            );
        }
        at_once
    }

    /// Batches each worker prepares ahead (at least 1, default 2).
    pub fn prefetch_factor(mut self, prefetch_factor: usize) -> Self {
        self.prefetch_factor = prefetch_factor.max(1);
        self
    }

    /// Keep the worker threads from one epoch to the next (default `true`); with `false` each
    /// epoch starts its own and stops them at its end, as PyTorch's default does.
    pub fn persistent_workers(mut self, persistent_workers: bool) -> Self {
        self.persistent_workers = persistent_workers;
        self
    }

    /// The dataset.
    pub fn dataset(&self) -> &D {
        &self.dataset
    }

    /// The sample indices of epoch `epoch`, in visiting order (this process's share of them in
    /// distributed training: the order is padded by repeating its start to a multiple of the
    /// world size, and rank `r` takes every world-th index from `r`, as `DistributedSampler`).
    pub fn epoch_order(&self, epoch: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.dataset.len()).collect();
        if self.shuffle {
            order.shuffle(&mut ChaCha8Rng::seed_from_u64(self.seed.wrapping_add(epoch as u64)));
        }
        match self.shard {
            Some((rank, world)) if world > 1 && !order.is_empty() => {
                let padded = order.len().div_ceil(world) * world;
                let extra: Vec<usize> = order.iter().cycle().take(padded - order.len()).copied().collect();
                order.extend(extra);
                order.into_iter().skip(rank).step_by(world).collect()
            }
            _ => order,
        }
    }

    fn samples(&self) -> usize {
        match self.shard {
            Some((_, world)) if world > 1 => self.dataset.len().div_ceil(world),
            _ => self.dataset.len(),
        }
    }

    fn num_batches(&self) -> usize {
        let n = self.samples();
        let batch_size = self.batch_size.max(1);
        if self.drop_last { n / batch_size } else { n.div_ceil(batch_size) }
    }
}

fn panic_message(payload: Box<dyn Any + Send>) -> String {
    crate::error::torch_message(&crate::error::panic_message(&*payload))
}

/// Runs the collate step for one batch, turning a panic into an error.
fn load_batch<D: Dataset, B>(
    dataset: &D,
    collate: &CollateFn<D, B>,
    indices: &[usize],
    batch: usize,
    worker: Option<usize>,
) -> Result<B> {
    catch_unwind(AssertUnwindSafe(|| collate(dataset, indices)))
        .unwrap_or_else(|p| Err(DataError::Panicked { batch, worker, message: panic_message(p) }.into()))
}

impl<D: Dataset, B: Batch> Loader for DataLoader<D, B> {
    type Batch = B;

    fn len(&self) -> Option<usize> {
        Some(self.num_batches())
    }

    fn iter(&mut self, epoch: usize) -> Result<BatchIter<'_, B>> {
        self.iter_from(epoch, 0)
    }

    fn shard(&mut self, rank: usize, world: usize) {
        self.shard = Some((rank, world.max(1)));
    }

    fn disable_shuffle(&mut self) {
        self.shuffle = false;
    }

    fn iter_from(&mut self, epoch: usize, start: usize) -> Result<BatchIter<'_, B>> {
        if self.batch_size == 0 {
            return Err(crate::error::ConfigError::invalid(
                "batch_size",
                "a DataLoader's batch_size must be at least 1, got 0",
            )
            .into());
        }
        let order = Arc::new(self.epoch_order(epoch));
        let batches = self.num_batches();
        let (batch_size, samples) = (self.batch_size, order.len());
        let range = move |b: usize| b * batch_size..((b + 1) * batch_size).min(samples);
        if self.num_workers == 0 || self.reads_batches_at_once() {
            let (dataset, collate) = (&*self.dataset, &*self.collate);
            let mut failed = false;
            return Ok(Box::new((start.min(batches)..batches).map_while(move |b| {
                if failed {
                    return None;
                }
                let result = load_batch(dataset, collate, &order[range(b)], b, None);
                failed = result.is_err();
                Some(result)
            })));
        }
        if self.workers.is_none() {
            self.workers = Some(Workers::start(&self.dataset, &self.collate, self.num_workers, self.prefetch_factor));
        }
        let job = Job { order, start: start.min(batches), batches, batch_size, stop: Arc::new(AtomicBool::new(false)) };
        let persistent = self.persistent_workers;
        let workers = &mut self.workers;
        Ok(Box::new(WorkerIter::new(workers, Arc::new(job), persistent)))
    }
}

/// One epoch's work for the workers: batches `start..batches` of `order`.
struct Job {
    order: Arc<Vec<usize>>,
    start: usize,
    batches: usize,
    batch_size: usize,
    /// Set when the epoch's iterator is dropped: the workers skip the rest of the job.
    stop: Arc<AtomicBool>,
}

/// What a worker sends: a batch, or the end of its part of a job.
enum Message<B> {
    Batch(Result<B>),
    Done,
}

/// A loader's worker threads. Worker `w` of `n` makes batches `start + w, start + w + n, …` of
/// each job into its own bounded channel (the prefetch), then says it is done with the job.
struct Workers<B> {
    jobs: Vec<Sender<Arc<Job>>>,
    results: Vec<Receiver<Message<B>>>,
    handles: Vec<JoinHandle<()>>,
}

impl<B: Batch> Workers<B> {
    fn start<D: Dataset>(dataset: &Arc<D>, collate: &Arc<CollateFn<D, B>>, n: usize, prefetch: usize) -> Self {
        let mut workers = Workers { jobs: Vec::new(), results: Vec::new(), handles: Vec::new() };
        for w in 0..n {
            let (job_tx, job_rx) = unbounded::<Arc<Job>>();
            let (tx, rx) = bounded(prefetch);
            let (dataset, collate) = (Arc::clone(dataset), Arc::clone(collate));
            let spawned = std::thread::Builder::new().name(format!("lit-loader-{w}")).spawn(move || {
                // Gathering and collating run on this thread alone: the training thread's
                // intra-op threads have the cores.
                #[cfg(lit_shim)]
                let _ = crate::shim::single_threaded_here();
                for job in job_rx {
                    for b in (job.start + w..job.batches).step_by(n) {
                        if job.stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let range = b * job.batch_size..((b + 1) * job.batch_size).min(job.order.len());
                        let result = load_batch(&*dataset, &*collate, &job.order[range], b, Some(w));
                        let failed = result.is_err();
                        if tx.send(Message::Batch(result)).is_err() {
                            return;
                        }
                        if failed {
                            break;
                        }
                    }
                    if tx.send(Message::Done).is_err() {
                        return;
                    }
                }
            });
            match spawned {
                Ok(handle) => workers.handles.push(handle),
                // Without its thread the receiver reports the worker's batches as undelivered.
                Err(e) => tracing::error!(worker = w, error = %e, "could not start a dataloader worker"),
            }
            workers.jobs.push(job_tx);
            workers.results.push(rx);
        }
        workers
    }
}

impl<B> Drop for Workers<B> {
    fn drop(&mut self) {
        // Without their channels the workers' sends and job reads fail, and they exit.
        self.results.clear();
        self.jobs.clear();
        for handle in self.handles.drain(..) {
            let _ = handle.join();
        }
    }
}

/// Iterates one epoch's batches from the workers, in order, taking from them in turn. Dropped
/// early (a batch limit, an error, a stopped fit), it stops the job and takes what the workers
/// already made, so they are idle and ready for the next epoch.
struct WorkerIter<'a, B> {
    workers: &'a mut Option<Workers<B>>,
    job: Arc<Job>,
    /// Which workers said they are done with the job.
    done: Vec<bool>,
    persistent: bool,
    next: usize,
    failed: bool,
}

impl<'a, B> WorkerIter<'a, B> {
    fn new(workers: &'a mut Option<Workers<B>>, job: Arc<Job>, persistent: bool) -> Self {
        let n = workers.as_ref().map_or(0, |w| w.jobs.len());
        let mut done = vec![false; n];
        if let Some(w) = workers.as_ref() {
            for (i, jobs) in w.jobs.iter().enumerate() {
                // A worker whose thread is gone has nothing to finish.
                done[i] = jobs.send(Arc::clone(&job)).is_err();
            }
        }
        let next = job.start;
        WorkerIter { workers, job, done, persistent, next, failed: false }
    }
}

impl<B> Iterator for WorkerIter<'_, B> {
    type Item = Result<B>;

    fn next(&mut self) -> Option<Result<B>> {
        if self.failed || self.next >= self.job.batches {
            return None;
        }
        let workers = self.workers.as_ref()?;
        let (batch, worker) = (self.next, (self.next - self.job.start) % workers.results.len());
        self.next += 1;
        let died = || Err(Error::from(DataError::WorkerDied { worker, batch }));
        let result = match workers.results[worker].recv() {
            Ok(Message::Batch(result)) => result,
            Ok(Message::Done) => {
                self.done[worker] = true;
                died()
            }
            Err(_) => {
                self.done[worker] = true;
                died()
            }
        };
        self.failed = result.is_err();
        Some(result)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.job.batches.saturating_sub(self.next)))
    }
}

impl<B> Drop for WorkerIter<'_, B> {
    fn drop(&mut self) {
        self.job.stop.store(true, Ordering::Relaxed);
        if let Some(workers) = self.workers.as_ref() {
            for (results, done) in workers.results.iter().zip(&mut self.done) {
                while !*done {
                    *done = !matches!(results.recv(), Ok(Message::Batch(_)));
                }
            }
        }
        if !self.persistent {
            *self.workers = None;
        }
    }
}
