//! Data: datasets, loaders, batches and the IDX/MNIST reader.

mod batch;
mod datamodule;
mod dataset;
mod idx;
mod loader;

pub use batch::Batch;
pub use datamodule::{BoxLoader, DataModule};
pub(crate) use datamodule::{ErasedDataModule, prepares_data};
pub use dataset::{Dataset, Subset, TensorDataset, Tensors, random_split, random_split_fractions};
pub use idx::{MNIST_MEAN_STD, Mnist, read_idx};
pub use loader::{BatchIter, Batches, DataLoader, Loader};
