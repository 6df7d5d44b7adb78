// Truncated BPTT: a `hiddens` parameter and `(loss, hiddens)` returned, with the default split.
use lit::prelude::*;

#[lightning_module]
struct Model {
    vs: nn::VarStore,
}

#[lightning_module(truncated_bptt_steps = 5)]
impl Model {
    fn training_step(&mut self, (x, _y): (Tensor, Tensor), hiddens: Option<Tensor>, cx: &mut Ctx) -> (Tensor, Tensor) {
        let h = hiddens.unwrap_or_else(|| x.zeros_like());
        cx.log("h", h.sum(Kind::Float));
        (x.sum(Kind::Float), h)
    }
}

fn main() {
    assert_eq!(<Model as LightningModule>::TRUNCATED_BPTT_STEPS, Some(5));
}
