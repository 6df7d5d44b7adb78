use lit::prelude::*;

#[hparams]
pub struct A {
    pub x: i64,
}

#[lightning_module]
struct Model {
    vs: nn::VarStore,
    #[hparams]
    a: A,
    #[hparams]
    b: A,
}

fn main() {}
