//! Compile-time (trybuild) tests of lit's macros live in `tests/`; they arrive with the macros.
