//! The capture API's Linear layer: `y = x W^T + b` for `x` `[B, in]` or `[B, T, in]`.

use psg_runtime::{Device, Error, Result, Tensor};

use super::init::{uniform, SplitMix};
use super::layer::Layer;
use super::matmul::{matmul, Operand};
use crate::layers::grads::{LayerGrads, Sink};
use crate::layers::inputs::{check_f32, same_device};
use crate::layers::linear::{linear_with, LinearSchedule};

/// A fully connected layer with weight `[out, in]` and an optional bias `[out]`.
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
    schedule: LinearSchedule,
    input: Option<Tensor>,
    grad_output: Option<Tensor>,
}

impl Linear {
    /// A layer with these parameters (f32, weight `[out, in]`, bias `[out]`, one device).
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Result<Self> {
        check_params(&weight, bias.as_ref())?;
        Ok(Linear {
            weight,
            bias,
            schedule: LinearSchedule::default(),
            input: None,
            grad_output: None,
        })
    }

    /// A layer initialised as PyTorch does (weight and bias uniform in ±1/sqrt(in)), from `seed`.
    pub fn init(
        in_features: usize,
        out_features: usize,
        bias: bool,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        let bound = 1.0 / (in_features.max(1) as f32).sqrt();
        let mut rng = SplitMix::new(seed);
        let weight = uniform(&mut rng, &[out_features, in_features], bound, device)?;
        let bias = if bias {
            Some(uniform(&mut rng, &[out_features], bound, device)?)
        } else {
            None
        };
        Linear::new(weight, bias)
    }

    /// Uses `schedule` for the one-pass gradient kernel on a GPU.
    pub fn with_schedule(mut self, schedule: LinearSchedule) -> Self {
        self.schedule = schedule;
        self
    }

    /// The weight `[out, in]`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The bias `[out]`, if any.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// What the last forward and backward pass recorded: the input `A` and output gradient `G`.
    pub fn captured(&self) -> Option<(&Tensor, &Tensor)> {
        self.input.as_ref().zip(self.grad_output.as_ref())
    }

    fn dims(&self) -> (usize, usize) {
        (self.weight.shape()[0], self.weight.shape()[1])
    }
}

fn check_params(weight: &Tensor, bias: Option<&Tensor>) -> Result<()> {
    check_f32("Linear", "the weight", weight)?;
    let [out, _] = *weight.shape() else {
        return Err(Error::Shape(format!(
            "Linear: the weight must be [out, in], got {:?}",
            weight.shape()
        )));
    };
    if let Some(b) = bias {
        check_f32("Linear", "the bias", b)?;
        same_device("Linear", ("the weight", weight), ("the bias", b))?;
        if b.shape() != [out] {
            return Err(Error::Shape(format!(
                "Linear: the bias must be [{out}], got {:?}",
                b.shape()
            )));
        }
    }
    Ok(())
}

/// `x` as rows `[N, features]`, checking its last dimension and rank.
fn rows(x: &Tensor, features: usize, what: &str) -> Result<Tensor> {
    let s = x.shape();
    if !(s.len() == 2 || s.len() == 3) || s[s.len() - 1] != features {
        return Err(Error::Shape(format!(
            "Linear: the {what} must be [B, {features}] or [B, T, {features}], got {s:?}"
        )));
    }
    // The rows from the shape, not from x.len() / features: a layer with no inputs has 0 of both.
    let n = s[..s.len() - 1]
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| Error::Shape(format!("Linear: the {what} {s:?} has too many rows")))?;
    x.reshape(&[n, features])
}

fn with_last(shape: &[usize], last: usize) -> Vec<usize> {
    let mut s = shape.to_vec();
    if let Some(l) = s.last_mut() {
        *l = last;
    }
    s
}

impl Layer for Linear {
    fn name(&self) -> &'static str {
        "linear"
    }

    fn forward(&mut self, x: &Tensor) -> Result<Tensor> {
        let (out, inp) = self.dims();
        let flat = rows(x, inp, "input")?;
        let w = Operand {
            tensor: &self.weight,
            transposed: true,
        };
        let y = matmul(
            Operand {
                tensor: &flat,
                transposed: false,
            },
            w,
            self.bias.as_ref(),
        )?;
        self.input = Some(x.clone());
        self.grad_output = None;
        y.reshape(&with_last(x.shape(), out))
    }

    fn backward(&mut self, grad_output: &Tensor) -> Result<Tensor> {
        let (out, inp) = self.dims();
        let x = self.input.as_ref().ok_or_else(|| {
            Error::InvalidParameter("Linear: backward before forward; run forward first".into())
        })?;
        if grad_output.shape() != with_last(x.shape(), out).as_slice() {
            return Err(Error::Shape(format!(
                "Linear: the output gradient {:?} does not match the last output {:?}",
                grad_output.shape(),
                with_last(x.shape(), out)
            )));
        }
        let flat = rows(grad_output, out, "output gradient")?;
        let w = Operand {
            tensor: &self.weight,
            transposed: false,
        };
        let gx = matmul(
            Operand {
                tensor: &flat,
                transposed: false,
            },
            w,
            None,
        )?;
        self.grad_output = Some(grad_output.clone());
        gx.reshape(&with_last(x.shape(), inp))
    }

    fn params(&self) -> Vec<&Tensor> {
        let mut p = vec![&self.weight];
        p.extend(self.bias.as_ref());
        p
    }

    fn set_params(&mut self, params: Vec<Tensor>) -> Result<()> {
        let want = self.params().len();
        if params.len() != want {
            return Err(Error::InvalidParameter(format!(
                "Linear: {} parameters given, {want} expected",
                params.len()
            )));
        }
        let mut it = params.into_iter();
        let weight = it.next().unwrap_or_else(|| self.weight.clone());
        let bias = it.next();
        if weight.shape() != self.weight.shape()
            || bias.as_ref().map(Tensor::shape) != self.bias.as_ref().map(Tensor::shape)
        {
            return Err(Error::Shape(
                "Linear: new parameters must keep the old shapes".into(),
            ));
        }
        check_params(&weight, bias.as_ref())?;
        self.weight = weight;
        self.bias = bias;
        Ok(())
    }

    fn grads(&self, sink: Sink<'_>) -> Result<Option<LayerGrads>> {
        let (a, g) = self.captured().ok_or_else(|| {
            Error::InvalidParameter(
                "Linear: no captured pass; run forward and backward first".into(),
            )
        })?;
        linear_with(a, g, self.bias.is_some(), sink, self.schedule).map(Some)
    }
}
