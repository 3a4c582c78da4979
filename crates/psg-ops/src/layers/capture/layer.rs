//! The capture API's layer interface and `Sequential`, a stack of layers run in order.

use psg_runtime::{Error, Result, Tensor};

use crate::layers::grads::{LayerGrads, ParamGrad, Sink};

/// A layer with a hand-written forward and backward pass that records what its parameter
/// gradients need: its input `A` (in `forward`) and the gradient `G` of its output (in
/// `backward`).
pub trait Layer: Send {
    /// A short name for messages, e.g. `"linear"`.
    fn name(&self) -> &'static str;

    /// The output for input `x`; records `x` (a cheap, shared handle).
    fn forward(&mut self, x: &Tensor) -> Result<Tensor>;

    /// The gradient with respect to the last forward's input, given the gradient with respect to
    /// its output; records `grad_output`.
    fn backward(&mut self, grad_output: &Tensor) -> Result<Tensor>;

    /// The parameters, in a fixed order (weight first); none for parameter-free layers.
    fn params(&self) -> Vec<&Tensor> {
        Vec::new()
    }

    /// Replaces the parameters (same order, shapes and device as [`Layer::params`]).
    fn set_params(&mut self, params: Vec<Tensor>) -> Result<()> {
        if params.is_empty() {
            Ok(())
        } else {
            Err(Error::InvalidParameter(format!(
                "{}: this layer has no parameters",
                self.name()
            )))
        }
    }

    /// The per-sample and batch gradients of the parameters from the recorded `(A, G)` of the last
    /// forward and backward pass; `None` for parameter-free layers.
    fn grads(&self, sink: Sink<'_>) -> Result<Option<LayerGrads>> {
        let _ = sink;
        Ok(None)
    }
}

/// Layers applied one after another; `backward` runs them in reverse.
pub struct Sequential {
    layers: Vec<Box<dyn Layer>>,
}

impl Sequential {
    /// A stack of `layers`, first applied first.
    pub fn new(layers: Vec<Box<dyn Layer>>) -> Self {
        Sequential { layers }
    }

    /// The layers.
    pub fn layers(&self) -> &[Box<dyn Layer>] {
        &self.layers
    }

    /// The forward pass.
    pub fn forward(&mut self, x: &Tensor) -> Result<Tensor> {
        let mut h = x.clone();
        for layer in &mut self.layers {
            h = layer.forward(&h)?;
        }
        Ok(h)
    }

    /// The backward pass from the gradient of the (summed) loss with respect to the output;
    /// returns the gradient with respect to the input.
    pub fn backward(&mut self, grad_output: &Tensor) -> Result<Tensor> {
        let mut g = grad_output.clone();
        for layer in self.layers.iter_mut().rev() {
            g = layer.backward(&g)?;
        }
        Ok(g)
    }

    /// Every parameter, layer by layer (the order of [`Sequential::param_grads`]).
    pub fn params(&self) -> Vec<&Tensor> {
        self.layers.iter().flat_map(|l| l.params()).collect()
    }

    /// Replaces every parameter, in the order of [`Sequential::params`].
    pub fn set_params(&mut self, params: Vec<Tensor>) -> Result<()> {
        let want = self.params().len();
        if params.len() != want {
            return Err(Error::InvalidParameter(format!(
                "Sequential::set_params: {} tensors given, the model has {want} parameters",
                params.len()
            )));
        }
        let mut rest = params.into_iter();
        for layer in &mut self.layers {
            let n = layer.params().len();
            layer.set_params(rest.by_ref().take(n).collect())?;
        }
        Ok(())
    }

    /// Each parameterised layer's gradients from the last forward and backward pass.
    pub fn layer_grads(&self, sink: Sink<'_>) -> Result<Vec<LayerGrads>> {
        let mut out = Vec::new();
        for layer in &self.layers {
            if let Some(g) = layer.grads(sink)? {
                out.push(g);
            }
        }
        Ok(out)
    }

    /// Every parameter's gradients, in the order of [`Sequential::params`].
    pub fn param_grads(&self, sink: Sink<'_>) -> Result<Vec<ParamGrad>> {
        Ok(self
            .layer_grads(sink)?
            .into_iter()
            .flat_map(|g| g.params)
            .collect())
    }
}
