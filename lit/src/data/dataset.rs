//! Datasets: the [`Dataset`] trait, [`TensorDataset`], [`Subset`] and [`random_split`].

use std::sync::Arc;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use tch::{Kind, Tensor};

use crate::error::{DataError, Result};

/// A map-style dataset: a length and an item per index, as PyTorch's `Dataset`.
///
/// `Send + Sync` because loader workers read it from several threads at once.
pub trait Dataset: Send + Sync + 'static {
    /// One sample.
    type Item: Send + 'static;

    /// The number of samples.
    fn len(&self) -> usize;

    /// The sample at `index` (`0..len()`).
    fn get(&self, index: usize) -> Result<Self::Item>;

    /// Whether the dataset has no samples.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The samples at `indices` already stacked along a new first dimension, when the dataset
    /// can gather them faster than `get` plus stacking (one `index_select` on a big tensor).
    /// `None` (the default) lets the loader fetch and collate item by item.
    fn get_stacked(&self, indices: &[usize]) -> Option<Result<Self::Item>> {
        let _ = indices;
        None
    }
}

impl<D: Dataset + ?Sized> Dataset for Arc<D> {
    type Item = D::Item;
    fn len(&self) -> usize {
        (**self).len()
    }
    fn get(&self, index: usize) -> Result<Self::Item> {
        (**self).get(index)
    }
    fn get_stacked(&self, indices: &[usize]) -> Option<Result<Self::Item>> {
        (**self).get_stacked(indices)
    }
}

/// A tensor or a tuple of tensors whose first dimension indexes samples.
pub trait Tensors: crate::data::Batch + Send + Sized + 'static {
    /// The number of rows (first dimension) of every tensor, or an error if they differ.
    fn rows(&self) -> Result<usize>;
    /// Row `i` of every tensor.
    fn row(&self, i: usize) -> Result<Self>;
    /// The rows at `index` (a 1-D int64 tensor) of every tensor.
    fn select_rows(&self, index: &Tensor) -> Result<Self>;
    /// Samples stacked along a new first dimension: the default collate step.
    fn stack(items: Vec<Self>) -> Result<Self>;
}

fn first_dim(t: &Tensor) -> Result<usize> {
    t.size()
        .first()
        .map(|&n| n as usize)
        .ok_or_else(|| DataError::Collate("a 0-dimensional tensor has no rows".into()).into())
}

impl Tensors for Tensor {
    fn rows(&self) -> Result<usize> {
        first_dim(self)
    }
    fn row(&self, i: usize) -> Result<Self> {
        Ok(self.f_select(0, i as i64)?)
    }
    fn select_rows(&self, index: &Tensor) -> Result<Self> {
        Ok(self.f_index_select(0, index)?)
    }
    fn stack(items: Vec<Self>) -> Result<Self> {
        if items.is_empty() {
            return Err(DataError::Collate("no samples to stack".into()).into());
        }
        Tensor::f_stack(&items, 0).map_err(|e| DataError::Collate(e.to_string()).into())
    }
}

macro_rules! tuple_tensors {
    ($($name:ident $idx:tt),+) => {
        impl<$($name: Tensors),+> Tensors for ($($name,)+) {
            fn rows(&self) -> Result<usize> {
                let rows = [$(self.$idx.rows()?),+];
                if rows.iter().any(|&r| r != rows[0]) {
                    return Err(DataError::Collate(format!(
                        "tensors have different numbers of rows: {rows:?}"
                    )).into());
                }
                Ok(rows[0])
            }
            fn row(&self, i: usize) -> Result<Self> {
                Ok(($(self.$idx.row(i)?,)+))
            }
            fn select_rows(&self, index: &Tensor) -> Result<Self> {
                Ok(($(self.$idx.select_rows(index)?,)+))
            }
            #[allow(non_snake_case)]
            fn stack(items: Vec<Self>) -> Result<Self> {
                $(let mut $name = Vec::with_capacity(items.len());)+
                for item in items {
                    $($name.push(item.$idx);)+
                }
                Ok(($(Tensors::stack($name)?,)+))
            }
        }
    };
}
tuple_tensors!(A 0);
tuple_tensors!(A 0, B 1);
tuple_tensors!(A 0, B 1, C 2);
tuple_tensors!(A 0, B 1, C 2, D 3);

/// Samples held in memory as tensors, one row per sample, as PyTorch's `TensorDataset`.
///
/// `TensorDataset::new((images, labels))` yields `(image, label)` items; loaders gather whole
/// batches with one `index_select` per tensor.
pub struct TensorDataset<T> {
    /// Behind a lock only for the moment of taking a shallow copy (a new handle to the same
    /// storage): loader workers share the dataset, and `Tensor` is `Send` but not `Sync`. The
    /// rows are then read from the copy, outside the lock, so workers gather in parallel.
    tensors: std::sync::Mutex<T>,
    len: usize,
}

impl<T: Tensors> TensorDataset<T> {
    /// A dataset over tensors that share their first dimension.
    pub fn new(tensors: T) -> Result<Self> {
        let len = tensors.rows()?;
        Ok(TensorDataset { tensors: std::sync::Mutex::new(tensors), len })
    }

    /// A handle to the stored tensors (their storage is shared, not copied).
    fn tensors(&self) -> T {
        self.tensors.lock().unwrap_or_else(std::sync::PoisonError::into_inner).shallow_clone()
    }
}

impl<T: Tensors> Dataset for TensorDataset<T> {
    type Item = T;
    fn len(&self) -> usize {
        self.len
    }
    fn get(&self, index: usize) -> Result<T> {
        if index >= self.len {
            return Err(DataError::IndexOutOfRange { index, len: self.len }.into());
        }
        self.tensors().row(index)
    }
    fn get_stacked(&self, indices: &[usize]) -> Option<Result<T>> {
        if let Some(&index) = indices.iter().find(|&&i| i >= self.len) {
            return Some(Err(DataError::IndexOutOfRange { index, len: self.len }.into()));
        }
        let index: Vec<i64> = indices.iter().map(|&i| i as i64).collect();
        Some(self.tensors().select_rows(&Tensor::from_slice(&index).to_kind(Kind::Int64)))
    }
}

/// The samples of another dataset at given indices, as PyTorch's `Subset`.
pub struct Subset<D> {
    dataset: Arc<D>,
    indices: Vec<usize>,
}

impl<D: Dataset> Subset<D> {
    /// The samples of `dataset` at `indices`, in that order.
    pub fn new(dataset: Arc<D>, indices: Vec<usize>) -> Result<Self> {
        let len = dataset.len();
        if let Some(&index) = indices.iter().find(|&&i| i >= len) {
            return Err(DataError::IndexOutOfRange { index, len }.into());
        }
        Ok(Subset { dataset, indices })
    }

    /// The indices into the underlying dataset.
    pub fn indices(&self) -> &[usize] {
        &self.indices
    }
}

impl<D: Dataset> Dataset for Subset<D> {
    type Item = D::Item;
    fn len(&self) -> usize {
        self.indices.len()
    }
    fn get(&self, index: usize) -> Result<D::Item> {
        let inner = *self.indices.get(index).ok_or(DataError::IndexOutOfRange { index, len: self.indices.len() })?;
        self.dataset.get(inner)
    }
    fn get_stacked(&self, indices: &[usize]) -> Option<Result<D::Item>> {
        let mut inner = Vec::with_capacity(indices.len());
        for &index in indices {
            match self.indices.get(index) {
                Some(&i) => inner.push(i),
                None => {
                    let len = self.indices.len();
                    return Some(Err(DataError::IndexOutOfRange { index, len }.into()));
                }
            }
        }
        self.dataset.get_stacked(&inner)
    }
}

/// Splits a dataset into non-overlapping random subsets of the given lengths, reproducibly for
/// a given `seed`, as PyTorch's `random_split`. The lengths must add up to the dataset's length.
pub fn random_split<D: Dataset>(dataset: D, lengths: &[usize], seed: u64) -> Result<Vec<Subset<D>>> {
    let total: usize = lengths.iter().sum();
    if total != dataset.len() {
        return Err(DataError::Split(format!(
            "lengths {lengths:?} add up to {total}, but the dataset has {} samples",
            dataset.len()
        ))
        .into());
    }
    let mut order: Vec<usize> = (0..total).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let dataset = Arc::new(dataset);
    let mut start = 0;
    lengths
        .iter()
        .map(|&n| {
            let part = order[start..start + n].to_vec();
            start += n;
            Subset::new(Arc::clone(&dataset), part)
        })
        .collect()
}

/// Splits by fractions that add up to 1 (e.g. `[0.9, 0.1]`); rounding remainders go to the
/// first parts, one sample each, as PyTorch does.
pub fn random_split_fractions<D: Dataset>(dataset: D, fractions: &[f64], seed: u64) -> Result<Vec<Subset<D>>> {
    let sum: f64 = fractions.iter().sum();
    if (sum - 1.0).abs() > 1e-6 || fractions.iter().any(|f| !(0.0..=1.0).contains(f)) {
        return Err(DataError::Split(format!("fractions {fractions:?} must each lie in [0, 1] and add up to 1")).into());
    }
    let n = dataset.len();
    let mut lengths: Vec<usize> = fractions.iter().map(|f| (f * n as f64).floor() as usize).collect();
    let remainder = n - lengths.iter().sum::<usize>();
    let parts = lengths.len();
    for i in 0..remainder {
        lengths[i % parts] += 1;
    }
    random_split(dataset, &lengths, seed)
}
