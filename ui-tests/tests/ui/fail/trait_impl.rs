use lit::prelude::*;

#[lightning_module]
struct Model {
    vs: nn::VarStore,
}

#[lightning_module]
impl Clone for Model {
    fn clone(&self) -> Self {
        todo!()
    }
}

fn main() {}
