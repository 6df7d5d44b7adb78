use lit::prelude::*;

#[lightning_module(truncated_bptt_steps = 4)]
struct Model {
    vs: nn::VarStore,
}

fn main() {}
