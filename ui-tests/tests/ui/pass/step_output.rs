// Steps returning StepOutput with extras, wrapped in Result and Option.
use lit::prelude::*;

#[lightning_module]
struct Model {
    vs: nn::VarStore,
}

#[lightning_module]
impl Model {
    fn training_step(&mut self, x: Tensor) -> lit::Result<Option<StepOutput>> {
        Ok(Some(StepOutput::loss(x.sum(Kind::Float)).with("raw", x)))
    }
    fn validation_step(&mut self, x: Tensor) -> lit::Result<StepOutput> {
        Ok(StepOutput::loss(x))
    }
    fn test_step(&mut self, _x: Tensor) -> lit::Result<()> {
        Ok(())
    }
}

fn main() {}
