//! The IDX format (MNIST's files), raw or gzipped, and the MNIST dataset.

use std::io::Read;
use std::path::{Path, PathBuf};

use tch::{Kind, Tensor};

use super::dataset::TensorDataset;
use crate::error::{DataError, Error, Result};

fn idx_error(path: &Path, problem: impl Into<String>) -> Error {
    DataError::Idx { path: path.to_path_buf(), problem: problem.into() }.into()
}

/// Reads an IDX file (gzipped or raw, told apart by content) into a tensor of its element type
/// and shape. The magic number, the dimensions and the data length are all checked: a truncated
/// or foreign file is an error naming the file and the problem.
pub fn read_idx(path: impl AsRef<Path>) -> Result<Tensor> {
    let path = path.as_ref();
    let raw = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::with_capacity(raw.len() * 4);
        flate2::read::MultiGzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| idx_error(path, format!("gzip data is corrupt or truncated ({e})")))?;
        out
    } else {
        raw
    };
    parse_idx(path, &bytes)
}

fn parse_idx(path: &Path, bytes: &[u8]) -> Result<Tensor> {
    if bytes.len() < 4 {
        return Err(idx_error(path, format!("{} bytes is too short for an IDX header", bytes.len())));
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err(idx_error(
            path,
            format!(
                "bad magic number {:02x}{:02x}{:02x}{:02x}: not an IDX file",
                bytes[0], bytes[1], bytes[2], bytes[3]
            ),
        ));
    }
    let (kind, elem_size) = match bytes[2] {
        0x08 => (Kind::Uint8, 1),
        0x09 => (Kind::Int8, 1),
        0x0B => (Kind::Int16, 2),
        0x0C => (Kind::Int, 4),
        0x0D => (Kind::Float, 4),
        0x0E => (Kind::Double, 8),
        code => return Err(idx_error(path, format!("unknown element type code 0x{code:02x} in the magic number"))),
    };
    let ndims = bytes[3] as usize;
    if ndims == 0 {
        return Err(idx_error(path, "the header declares 0 dimensions"));
    }
    let header = 4 + 4 * ndims;
    if bytes.len() < header {
        return Err(idx_error(
            path,
            format!("truncated header: {ndims} dimensions need {header} bytes, the file has {}", bytes.len()),
        ));
    }
    let dims: Vec<i64> =
        bytes[4..header].chunks_exact(4).map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as i64).collect();
    let expected = dims
        .iter()
        .try_fold(elem_size as u64, |acc, &d| acc.checked_mul(d as u64))
        .ok_or_else(|| idx_error(path, format!("dimensions {dims:?} overflow")))?;
    let actual = (bytes.len() - header) as u64;
    if actual != expected {
        let what = if actual < expected { "truncated" } else { "has trailing bytes" };
        return Err(idx_error(
            path,
            format!("{what}: dimensions {dims:?} need {expected} bytes of data, the file has {actual}"),
        ));
    }
    let data = &bytes[header..];
    let tensor = if elem_size == 1 {
        Tensor::from_data_size(data, &dims, kind)
    } else {
        // IDX stores multi-byte values big-endian; swap each element to native order.
        let mut native = data.to_vec();
        if cfg!(target_endian = "little") {
            native.chunks_exact_mut(elem_size).for_each(|c| c.reverse());
        }
        Tensor::from_data_size(&native, &dims, kind)
    };
    Ok(tensor)
}

/// MNIST's mean and standard deviation of pixel values in [0, 1], the usual normalisation.
pub const MNIST_MEAN_STD: (f64, f64) = (0.1307, 0.3081);

/// One split of MNIST: images as float tensors `[n, 784]` (normalised) and labels `[n]` (int64).
pub struct Mnist {
    /// Images, flattened to 784 features and normalised with [`MNIST_MEAN_STD`].
    pub images: Tensor,
    /// Labels 0–9.
    pub labels: Tensor,
}

impl Mnist {
    /// The training split (60,000 samples) from `dir`, which holds the four standard files
    /// (`train-images-idx3-ubyte[.gz]`, …).
    pub fn train(dir: impl AsRef<Path>) -> Result<Self> {
        Self::load(dir.as_ref(), "train")
    }

    /// The test split (10,000 samples) from `dir`.
    pub fn test(dir: impl AsRef<Path>) -> Result<Self> {
        Self::load(dir.as_ref(), "t10k")
    }

    fn load(dir: &Path, prefix: &str) -> Result<Self> {
        let images_path = find(dir, &format!("{prefix}-images-idx3-ubyte"))?;
        let labels_path = find(dir, &format!("{prefix}-labels-idx1-ubyte"))?;
        let images = read_idx(&images_path)?;
        let labels = read_idx(&labels_path)?;
        let (n_img, n_lab) = (images.size()[0], labels.size()[0]);
        if images.dim() != 3 {
            return Err(idx_error(
                &images_path,
                format!("expected 3 dimensions (n, rows, cols), found {:?}", images.size()),
            ));
        }
        if labels.dim() != 1 || n_img != n_lab {
            return Err(idx_error(
                &labels_path,
                format!("expected {n_img} labels to match the images, found shape {:?}", labels.size()),
            ));
        }
        let (mean, std) = MNIST_MEAN_STD;
        let images = (images.view([n_img, -1]).to_kind(Kind::Float) / 255.0 - mean) / std;
        Ok(Mnist { images, labels: labels.to_kind(Kind::Int64) })
    }

    /// The split as a dataset of `(image, label)` items.
    pub fn into_dataset(self) -> Result<TensorDataset<(Tensor, Tensor)>> {
        TensorDataset::new((self.images, self.labels))
    }
}

fn find(dir: &Path, stem: &str) -> Result<PathBuf> {
    [format!("{stem}.gz"), stem.to_string()].into_iter().map(|name| dir.join(name)).find(|p| p.is_file()).ok_or_else(
        || {
            Error::io(
                dir.join(format!("{stem}.gz")),
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("neither {stem}.gz nor {stem} is in this directory"),
                ),
            )
        },
    )
}
