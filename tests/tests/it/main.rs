//! lit's integration tests, through the public API only. One binary, one module per area.

mod checkpoint;
mod common;
mod data;
mod ddp;
mod faults;
mod hooks;
mod idx;
mod logging;
mod macros;
mod mnist;
mod optim;
mod resume;
mod trainer;
