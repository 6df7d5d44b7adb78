//! lit's integration tests live in `tests/it/`: one test binary, one module per area.
