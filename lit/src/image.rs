//! Images: PNG files and grids of images, for examples and loggers.

use std::io::Write;
use std::path::Path;

use tch::{Kind, Tensor};

use crate::error::{Error, Result};

/// A minimal PNG encoder: 8-bit grey, RGB or RGBA, one zlib stream, no filtering.
pub(crate) fn png(pixels: &[u8], width: u32, height: u32, channels: u8) -> Vec<u8> {
    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut crc = flate2::Crc::new();
        crc.update(kind);
        crc.update(data);
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        out.extend_from_slice(&crc.sum().to_be_bytes());
    }
    let color = match channels {
        1 => 0,
        3 => 2,
        _ => 6,
    };
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, color, 0, 0, 0]);
    let row = width as usize * channels as usize;
    let mut raw = Vec::with_capacity((row + 1) * height as usize);
    for line in pixels.chunks(row) {
        raw.push(0);
        raw.extend_from_slice(line);
    }
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    let _ = z.write_all(&raw);
    let idat = z.finish().unwrap_or_default();
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &idat);
    chunk(&mut out, b"IEND", &[]);
    out
}

/// The `[C, H, W]` image as 8-bit `H, W, C` bytes (floats are read as values in [0, 1]).
pub(crate) fn hwc_bytes(image: &Tensor) -> Result<Vec<u8>> {
    let bytes = if image.kind() == Kind::Uint8 {
        image.shallow_clone()
    } else {
        (image.clamp(0.0, 1.0) * 255.0).round().to_kind(Kind::Uint8)
    };
    Ok(Vec::<u8>::try_from(bytes.detach().to_device(tch::Device::Cpu).permute([1, 2, 0]).contiguous().flatten(0, -1))?)
}

/// Saves a `[C, H, W]` image (C = 1, 3 or 4; floats in [0, 1], or bytes) as a PNG file.
pub fn save_png(image: &Tensor, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let size = image.size();
    let [c, h, w] = size[..] else {
        return Err(Error::msg(format!(
            "save_png {}: expected a [C, H, W] tensor, got shape {size:?}",
            path.display()
        )));
    };
    if ![1, 3, 4].contains(&c) {
        return Err(Error::msg(format!("save_png {}: expected 1, 3 or 4 channels, got {c}", path.display())));
    }
    let bytes = png(&hwc_bytes(image)?, w as u32, h as u32, c as u8);
    std::fs::write(path, bytes).map_err(|e| Error::io(path, e))
}

/// Lays `[N, C, H, W]` images out in a grid of `per_row` columns with `padding` pixels between
/// them, as torchvision's `make_grid`; returns one `[C, H', W']` image.
pub fn make_grid(images: &Tensor, per_row: usize, padding: i64) -> Result<Tensor> {
    let size = images.size();
    let [n, c, h, w] = size[..] else {
        return Err(Error::msg(format!("make_grid: expected [N, C, H, W] images, got shape {size:?}")));
    };
    let cols = (per_row.max(1) as i64).min(n.max(1));
    let rows = (n + cols - 1) / cols;
    let grid = Tensor::zeros(
        [c, rows * (h + padding) + padding, cols * (w + padding) + padding],
        (images.kind(), images.device()),
    );
    for i in 0..n {
        let (r, col) = (i / cols, i % cols);
        let mut cell = grid.narrow(1, padding + r * (h + padding), h).narrow(2, padding + col * (w + padding), w);
        cell.copy_(&images.get(i));
    }
    Ok(grid)
}
