//! lit's integration tests, through the public API only. One binary, one module per area.

mod common;
mod data;
mod hooks;
mod idx;
mod mnist;
mod trainer;
