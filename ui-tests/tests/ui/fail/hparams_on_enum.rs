use lit::prelude::*;

#[hparams]
enum Config {
    Small,
}

fn main() {}
