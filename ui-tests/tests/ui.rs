//! Compile-time tests of `#[lightning_module]` and `#[hparams]`: every pass case compiles and
//! runs, every fail case fails with the error snapshotted beside it (`TRYBUILD=overwrite`
//! regenerates the snapshots; read the diff before committing).

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass/*.rs");
    t.compile_fail("tests/ui/fail/*.rs");
}

/// The README shows the errors of `fail/readme_example.rs` as they are.
#[test]
fn the_readme_shows_the_example_errors_as_they_are() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("../README.md")).expect("README.md");
    let snapshot = std::fs::read_to_string(root.join("tests/ui/fail/readme_example.stderr")).expect("snapshot");
    assert!(readme.contains(snapshot.trim_end()), "README.md does not show fail/readme_example.stderr as it is");
}
