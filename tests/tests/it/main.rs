//! lit's integration tests, through the public API only. One binary, one module per area.

mod callbacks;
mod checkpoint;
mod cli;
mod common;
mod conformance;
mod data;
mod datamodule;
mod ddp;
mod export;
mod faults;
mod flags;
mod hooks;
mod idx;
mod interop;
mod logging;
mod macros;
mod metrics;
mod mlflow;
mod mnist;
mod optim;
mod precision;
mod predictions;
mod readme;
mod resume;
mod trainer;
mod tuner;
