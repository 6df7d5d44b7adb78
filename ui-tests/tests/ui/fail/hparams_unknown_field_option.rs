use lit::prelude::*;

#[hparams]
pub struct Config {
    #[hparams(defualt = 3)]
    pub hidden: i64,
}

fn main() {}
