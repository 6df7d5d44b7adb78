use lit::prelude::*;

#[lightning_module]
struct Model {
    encoder: nn::VarStore,
    decoder: nn::VarStore,
}

fn main() {}
