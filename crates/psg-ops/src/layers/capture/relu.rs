//! ReLU: no parameters; it records its input for the backward pass.

use psg_runtime::{Error, Result, Tensor};

use super::layer::Layer;
use super::pointwise::{relu_backward, relu_forward};

/// `max(x, 0)`, element-wise, any shape.
#[derive(Clone, Debug, Default)]
pub struct Relu {
    input: Option<Tensor>,
}

impl Relu {
    /// A ReLU.
    pub fn new() -> Self {
        Relu::default()
    }
}

impl Layer for Relu {
    fn name(&self) -> &'static str {
        "relu"
    }

    fn forward(&mut self, x: &Tensor) -> Result<Tensor> {
        let y = relu_forward(x)?;
        self.input = Some(x.clone());
        Ok(y)
    }

    fn backward(&mut self, grad_output: &Tensor) -> Result<Tensor> {
        let x = self.input.as_ref().ok_or_else(|| {
            Error::InvalidParameter("relu: backward before forward; run forward first".into())
        })?;
        relu_backward(x, grad_output)
    }
}
