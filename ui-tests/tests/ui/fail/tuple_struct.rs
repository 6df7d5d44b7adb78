use lit::prelude::*;

#[lightning_module]
struct Model(nn::VarStore);

fn main() {}
