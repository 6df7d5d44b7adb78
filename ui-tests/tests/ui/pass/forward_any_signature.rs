// `forward` is a plain method: any signature compiles, and export is simply not available for
// the ones it cannot trace (a non-tensor output, two inputs).
use lit::prelude::*;

#[lightning_module]
struct Scalar {
    vs: nn::VarStore,
    w: Tensor,
}

#[lightning_module]
impl Scalar {
    fn forward(&self, x: &Tensor) -> f64 {
        (x * &self.w).sum(Kind::Float).double_value(&[])
    }

    fn training_step(&mut self, x: Tensor) -> Tensor {
        (&x * &self.w).sum(Kind::Float)
    }
}

#[lightning_module]
struct Pair {
    vs: nn::VarStore,
}

#[lightning_module]
impl Pair {
    fn forward(&self, a: &Tensor, b: &Tensor) -> Tensor {
        a + b
    }

    fn training_step(&mut self, x: Tensor) -> Tensor {
        self.forward(&x, &x).sum(Kind::Float)
    }
}

#[lightning_module]
struct Outputs {
    vs: nn::VarStore,
}

#[lightning_module]
impl Outputs {
    fn forward(&self, x: &Tensor, train: bool) -> (Tensor, Tensor) {
        let _ = train;
        (x.shallow_clone(), x * 2)
    }

    fn training_step(&mut self, x: Tensor) -> Tensor {
        self.forward(&x, true).1.sum(Kind::Float)
    }
}

fn main() {
    let vs = nn::VarStore::new(Device::Cpu);
    let w = vs.root().ones("w", &[2]);
    let scalar = Scalar { vs, w };
    assert_eq!(scalar.forward(&Tensor::ones([2], (Kind::Float, Device::Cpu))), 2.0);
    let pair = Pair { vs: nn::VarStore::new(Device::Cpu) };
    let x = Tensor::ones([2], (Kind::Float, Device::Cpu));
    assert_eq!(pair.forward(&x, &x).sum(Kind::Float).double_value(&[]), 4.0);
    // A traceable forward with a train flag and two outputs has the export methods.
    let _trace: fn(&Outputs, &Tensor) -> lit::Result<lit::tch::CModule> = Outputs::to_torchscript_with;
}
