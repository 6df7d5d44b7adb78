use lit::prelude::*;

#[lightning_module]
struct Model {
    layer: nn::Linear,
}

fn main() {}
