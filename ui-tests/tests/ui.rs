//! Compile-time tests of `#[lightning_module]` and `#[hparams]`: every pass case compiles and
//! runs, every fail case fails with the error snapshotted beside it (`TRYBUILD=overwrite`
//! regenerates the snapshots; read the diff before committing).

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass/*.rs");
    t.compile_fail("tests/ui/fail/*.rs");
}
