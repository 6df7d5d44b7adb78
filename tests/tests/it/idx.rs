//! The IDX reader: real files load; truncated, corrupt and foreign files are errors that name
//! the file and the problem.

use std::io::Write;
use std::path::Path;

use lit::data::read_idx;
use lit::{DataError, Error};

use crate::common::temp_dir;

fn idx_bytes(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        bytes.extend_from_slice(&d.to_be_bytes());
    }
    bytes.extend_from_slice(data);
    bytes
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn idx_problem(path: &Path) -> String {
    match read_idx(path) {
        Err(Error::Data(DataError::Idx { path: p, problem })) => {
            assert_eq!(p, path, "the error names the file");
            problem
        }
        Err(other) => panic!("expected an IDX error, got {other:?}"),
        Ok(t) => panic!("expected an error, read a tensor of shape {:?}", t.size()),
    }
}

#[test]
fn reads_raw_and_gzipped_files() {
    let dir = temp_dir("idx-ok");
    let data: Vec<u8> = (0..24).collect();
    let bytes = idx_bytes(&[2, 3, 4], &data);
    for path in [write(&dir, "a-idx3-ubyte", &bytes), write(&dir, "a-idx3-ubyte.gz", &gzip(&bytes))] {
        let t = read_idx(&path).unwrap();
        assert_eq!(t.size(), [2, 3, 4]);
        assert_eq!(t.kind(), lit::tch::Kind::Uint8);
        assert_eq!(Vec::<u8>::try_from(t.flatten(0, -1)).unwrap(), data);
    }
}

#[test]
fn reads_big_endian_multibyte_elements() {
    let dir = temp_dir("idx-int");
    let mut bytes = vec![0, 0, 0x0C, 1, 0, 0, 0, 2];
    bytes.extend_from_slice(&(-5i32).to_be_bytes());
    bytes.extend_from_slice(&70000i32.to_be_bytes());
    let t = read_idx(write(&dir, "ints", &bytes)).unwrap();
    assert_eq!(Vec::<i32>::try_from(t).unwrap(), [-5, 70000]);
}

#[test]
fn truncated_data_is_an_error() {
    let dir = temp_dir("idx-trunc");
    let path = write(&dir, "short", &idx_bytes(&[2, 3, 4], &[0; 20]));
    let problem = idx_problem(&path);
    assert!(
        problem.contains("truncated") && problem.contains("need 24 bytes") && problem.contains("has 20"),
        "{problem}"
    );
}

#[test]
fn trailing_bytes_are_an_error() {
    let dir = temp_dir("idx-long");
    let problem = idx_problem(&write(&dir, "long", &idx_bytes(&[2], &[1, 2, 3])));
    assert!(problem.contains("trailing bytes"), "{problem}");
}

#[test]
fn a_truncated_header_is_an_error() {
    let dir = temp_dir("idx-header");
    let problem = idx_problem(&write(&dir, "header", &[0, 0, 8, 3, 0, 0, 0, 2]));
    assert!(problem.contains("truncated header"), "{problem}");
    let problem = idx_problem(&write(&dir, "tiny", &[0, 0]));
    assert!(problem.contains("too short"), "{problem}");
}

#[test]
fn a_foreign_file_is_an_error() {
    let dir = temp_dir("idx-foreign");
    let problem = idx_problem(&write(&dir, "png", b"\x89PNG\r\n\x1a\n0000"));
    assert!(problem.contains("bad magic number") && problem.contains("not an IDX file"), "{problem}");
    let problem = idx_problem(&write(&dir, "type", &[0, 0, 0x07, 1, 0, 0, 0, 1, 0]));
    assert!(problem.contains("unknown element type code 0x07"), "{problem}");
}

#[test]
fn corrupt_gzip_is_an_error() {
    let dir = temp_dir("idx-gz");
    let gz = gzip(&idx_bytes(&[100], &[7; 100]));
    let problem = idx_problem(&write(&dir, "cut.gz", &gz[..gz.len() / 2]));
    assert!(problem.contains("gzip data is corrupt or truncated"), "{problem}");
}

#[test]
fn a_missing_file_names_the_path() {
    let dir = temp_dir("idx-missing");
    let e = read_idx(dir.join("nope")).err().unwrap();
    assert!(matches!(e, Error::Io { .. }));
    assert!(e.to_string().contains("nope"), "{e}");
}

#[test]
fn mnist_with_a_truncated_file_is_an_error() {
    let dir = temp_dir("idx-mnist");
    let real = crate::common::repo_root().join("data/mnist");
    std::fs::copy(real.join("t10k-labels-idx1-ubyte.gz"), dir.join("t10k-labels-idx1-ubyte.gz")).unwrap();
    let images = std::fs::read(real.join("t10k-images-idx3-ubyte.gz")).unwrap();
    write(&dir, "t10k-images-idx3-ubyte.gz", &images[..images.len() - 1000]);
    let e = lit::data::Mnist::test(&dir).err().unwrap().to_string();
    assert!(e.contains("t10k-images-idx3-ubyte.gz") && e.contains("gzip"), "{e}");
}
