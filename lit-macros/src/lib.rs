//! Procedural macros for lit: `#[lightning_module]` and `#[hparams]`.
//!
//! Not written yet: until they land, implement `lit::LightningModule` by hand (see the
//! `mnist` example). This crate compiles so that the workspace has its final shape.
