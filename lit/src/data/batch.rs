//! What a batch can do: move to a device, be shared without copying, tell its size.

use std::collections::{BTreeMap, HashMap};

use tch::{Device, Kind, Tensor};

/// A value that flows through the loops as a batch: tensors, tuples, `Vec`, `Option`, maps and
/// plain scalars. The Trainer moves every batch with [`Batch::to_device`]; user code makes no
/// `.to()` calls.
pub trait Batch: Send + Sized + 'static {
    /// The same batch on `device` (tensors already there are not copied).
    fn to_device(self, device: Device) -> Self;
    /// A handle to the same data, without copying tensor storage.
    fn shallow_clone(&self) -> Self;
    /// The number of samples, read off the first tensor's first dimension; used to weight
    /// epoch means of logged values.
    fn batch_size(&self) -> Option<usize>;
    /// The same batch with its floating-point tensors converted to `kind` (precision "64-true",
    /// "bf16-true", "16-true"); integer tensors (labels, indices) are left as they are.
    fn cast_floats(self, kind: Kind) -> Self;
}

impl Batch for Tensor {
    fn to_device(self, device: Device) -> Self {
        if self.device() == device { self } else { self.to_device(device) }
    }
    fn cast_floats(self, kind: Kind) -> Self {
        if self.is_floating_point() && self.kind() != kind { self.to_kind(kind) } else { self }
    }
    fn shallow_clone(&self) -> Self {
        Tensor::shallow_clone(self)
    }
    fn batch_size(&self) -> Option<usize> {
        self.size().first().map(|&n| n as usize)
    }
}

macro_rules! scalar_batch {
    ($($t:ty),*) => {$(
        impl Batch for $t {
            fn to_device(self, _device: Device) -> Self { self }
            fn cast_floats(self, _kind: Kind) -> Self { self }
            fn shallow_clone(&self) -> Self { self.clone() }
            fn batch_size(&self) -> Option<usize> { None }
        }
    )*};
}
scalar_batch!((), bool, i32, i64, u8, usize, f32, f64, String);

macro_rules! tuple_batch {
    ($($name:ident $idx:tt),+) => {
        impl<$($name: Batch),+> Batch for ($($name,)+) {
            fn to_device(self, device: Device) -> Self {
                ($(self.$idx.to_device(device),)+)
            }
            fn cast_floats(self, kind: Kind) -> Self {
                ($(self.$idx.cast_floats(kind),)+)
            }
            fn shallow_clone(&self) -> Self {
                ($(self.$idx.shallow_clone(),)+)
            }
            fn batch_size(&self) -> Option<usize> {
                None$(.or_else(|| self.$idx.batch_size()))+
            }
        }
    };
}
tuple_batch!(A 0);
tuple_batch!(A 0, B 1);
tuple_batch!(A 0, B 1, C 2);
tuple_batch!(A 0, B 1, C 2, D 3);
tuple_batch!(A 0, B 1, C 2, D 3, E 4);

impl<T: Batch> Batch for Vec<T> {
    fn to_device(self, device: Device) -> Self {
        self.into_iter().map(|b| b.to_device(device)).collect()
    }
    fn cast_floats(self, kind: Kind) -> Self {
        self.into_iter().map(|b| b.cast_floats(kind)).collect()
    }
    fn shallow_clone(&self) -> Self {
        self.iter().map(Batch::shallow_clone).collect()
    }
    fn batch_size(&self) -> Option<usize> {
        self.iter().find_map(Batch::batch_size)
    }
}

impl<T: Batch> Batch for Option<T> {
    fn to_device(self, device: Device) -> Self {
        self.map(|b| b.to_device(device))
    }
    fn cast_floats(self, kind: Kind) -> Self {
        self.map(|b| b.cast_floats(kind))
    }
    fn shallow_clone(&self) -> Self {
        self.as_ref().map(Batch::shallow_clone)
    }
    fn batch_size(&self) -> Option<usize> {
        self.as_ref().and_then(Batch::batch_size)
    }
}

/// Maps of batches, keyed by name: every value moves, casts and clones.
macro_rules! map_batch {
    ($map:ident, $($key_bound:tt)+) => {
        impl<K: $($key_bound)+ + Clone + Send + 'static, T: Batch> Batch for $map<K, T> {
            fn to_device(self, device: Device) -> Self {
                self.into_iter().map(|(k, v)| (k, v.to_device(device))).collect()
            }
            fn cast_floats(self, kind: Kind) -> Self {
                self.into_iter().map(|(k, v)| (k, v.cast_floats(kind))).collect()
            }
            fn shallow_clone(&self) -> Self {
                self.iter().map(|(k, v)| (k.clone(), v.shallow_clone())).collect()
            }
            fn batch_size(&self) -> Option<usize> {
                self.values().find_map(Batch::batch_size)
            }
        }
    };
}
map_batch!(BTreeMap, Ord);
map_batch!(HashMap, std::hash::Hash + Eq);
