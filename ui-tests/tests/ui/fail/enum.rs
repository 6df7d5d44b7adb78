use lit::prelude::*;

#[lightning_module]
enum Model {
    A,
}

fn main() {}
