//! What the one-pass layer kernels give back: for each parameter, its per-sample gradients (dense,
//! sparse rows, or already handed to a batch reduction) and its batch gradient; and the [`Sink`]
//! that says which of those the caller wants.

use psg_runtime::{run_reduction, Error, ReductionDef, Result, Tensor};

/// What becomes of the per-sample gradients a layer kernel produces.
///
/// With [`Sink::Reduce`] or [`Sink::Reduction`], the per-sample gradients `[B, ...]` go straight
/// into the reduction and only its result (`[...]`, the parameter's shape) is returned: "the median
/// of the per-sample gradients of this layer" is one call. The reduction must be a batch reduction
/// in psg's sense: it maps every column (the B values of one coordinate) on its own, so `[B, ...]`
/// becomes `[...]` (every built-in such as [`crate::median()`] or [`crate::mean()`] does).
#[derive(Clone, Copy)]
pub enum Sink<'a> {
    /// Return the per-sample gradients ([`PerSample::Dense`], or [`PerSample::Sparse`] for an
    /// embedding).
    Keep,
    /// Hand them to this function (e.g. `&psg_ops::median`) and return its result
    /// ([`PerSample::Reduced`]).
    Reduce(&'a dyn Fn(&Tensor) -> Result<Tensor>),
    /// Hand them to this batch reduction (one with no per-sample or scalar inputs; for several
    /// outputs the first is kept) and return its result ([`PerSample::Reduced`]).
    Reduction(&'a ReductionDef),
}

impl std::fmt::Debug for Sink<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Sink::Keep => f.write_str("Sink::Keep"),
            Sink::Reduce(_) => f.write_str("Sink::Reduce(..)"),
            Sink::Reduction(def) => write!(f, "Sink::Reduction({})", def.name),
        }
    }
}

impl Sink<'_> {
    /// Whether the per-sample gradients are to be returned as they are.
    pub fn keeps(&self) -> bool {
        matches!(self, Sink::Keep)
    }

    /// Applies a reducing sink to dense per-sample gradients `[B, ...]`; [`Sink::Keep`] returns
    /// them unchanged.
    ///
    /// A reduction must give one value per coordinate (shape `[...]` of `[B, ...]`); anything
    /// else is an [`Error::Shape`] naming what it gave.
    pub fn reduce(&self, per_sample: &Tensor) -> Result<Tensor> {
        let reduced = match self {
            Sink::Keep => return Ok(per_sample.clone()),
            Sink::Reduce(f) => f(per_sample)?,
            Sink::Reduction(def) => run_reduction(def, per_sample, &[], &[])?
                .into_iter()
                .next()
                .ok_or_else(|| {
                    Error::InvalidParameter(format!(
                        "the batch reduction `{}` returned no output",
                        def.name
                    ))
                })?,
        };
        let want = per_sample.shape().get(1..).unwrap_or(&[]);
        if reduced.shape() != want {
            return Err(Error::Shape(format!(
                "the sink's reduction of per-sample gradients {:?} gave {:?}; a batch reduction \
                 must give one value per coordinate, {want:?} (a per-sample result such as \
                 `sign` or `clip_values` is not one)",
                per_sample.shape(),
                reduced.shape()
            )));
        }
        Ok(reduced)
    }

    /// Dense per-sample gradients as this sink wants them.
    pub(crate) fn finish_dense(&self, per_sample: Tensor) -> Result<PerSample> {
        match self {
            Sink::Keep => Ok(PerSample::Dense(per_sample)),
            _ => Ok(PerSample::Reduced(self.reduce(&per_sample)?)),
        }
    }
}

/// The per-sample gradients of one parameter, in the form the [`Sink`] asked for.
#[derive(Clone, Debug)]
pub enum PerSample {
    /// `[B, ...param shape]`: row b is sample b's gradient (Opacus' `grad_sample` layout).
    Dense(Tensor),
    /// An embedding's per-sample gradients: only the rows each sample touched.
    Sparse(SparseRows),
    /// The result of the sink's reduction over the batch axis, `[...param shape]`.
    Reduced(Tensor),
}

impl PerSample {
    /// The dense per-sample gradients, if that is what this holds.
    pub fn dense(&self) -> Option<&Tensor> {
        match self {
            PerSample::Dense(t) => Some(t),
            _ => None,
        }
    }

    /// The sparse per-sample rows, if that is what this holds.
    pub fn sparse(&self) -> Option<&SparseRows> {
        match self {
            PerSample::Sparse(s) => Some(s),
            _ => None,
        }
    }

    /// The reduction's result, if that is what this holds.
    pub fn reduced(&self) -> Option<&Tensor> {
        match self {
            PerSample::Reduced(t) => Some(t),
            _ => None,
        }
    }

    /// The tensor inside a dense result (`[B, ...]` per-sample gradients, what clipping and
    /// DP-SGD take) or a reduced one (`[...param]`, one value per coordinate: not per-sample).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`] for sparse rows: their values are `[E, D]`, one row per
    /// (sample, table row) pair, and code that took E for the batch size would clip each pair on
    /// its own (a sample touching k rows could then contribute up to sqrt(k) C). Use
    /// [`SparseRows::to_dense`] for `[B, V, D]`, or [`PerSample::sparse`].
    pub fn tensor(&self) -> Result<&Tensor> {
        match self {
            PerSample::Dense(t) | PerSample::Reduced(t) => Ok(t),
            PerSample::Sparse(s) => Err(Error::InvalidParameter(format!(
                "these per-sample gradients are an embedding's sparse rows ({} entries of {} \
                 samples), not a [B, ...] tensor: clipping them as one would clip each (sample, \
                 row) entry on its own; call `.sparse()` and `SparseRows::to_dense()` for \
                 [B, V, D] per-sample gradients",
                s.rows.len(),
                s.batch_size()
            ))),
        }
    }
}

/// Sparse per-sample gradients of an embedding table `[V, D]`: sample b touched the rows
/// `rows[offsets[b]..offsets[b + 1]]` (ascending, distinct), and its gradient for row
/// `rows[j]` is `values[j]` (the sum of the output gradients of every position that looked it up).
/// Every other row of sample b's gradient is zero. Never a dense `[B, V, D]`.
#[derive(Clone, Debug)]
pub struct SparseRows {
    /// B + 1 offsets into `rows` and `values`.
    pub offsets: Vec<usize>,
    /// The table rows each sample touched, sample by sample.
    pub rows: Vec<u32>,
    /// `[rows.len(), D]`, on the device of the layer's inputs.
    pub values: Tensor,
    /// The table's number of rows V.
    pub vocab: usize,
}

impl SparseRows {
    /// The batch size B.
    pub fn batch_size(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    /// The rows sample `b` touched (empty for b out of range).
    pub fn rows_of(&self, b: usize) -> &[u32] {
        match (self.offsets.get(b), self.offsets.get(b + 1)) {
            (Some(&lo), Some(&hi)) => &self.rows[lo..hi],
            _ => &[],
        }
    }

    /// The dense per-sample gradients `[B, V, D]` (zero outside the rows each sample touched), on
    /// the values' device: what clipping and DP-SGD take, as Opacus materialises an
    /// embedding's `grad_sample`. The rows are laid out on the host, so a GPU's values make one
    /// round trip; B x V x D values must fit in host memory and on the device.
    ///
    /// # Errors
    ///
    /// [`Error::HostMemory`] or [`Error::Shape`] when `[B, V, D]` does not fit, and the
    /// device's errors.
    pub fn to_dense(&self) -> Result<Tensor> {
        let (b, v) = (self.batch_size(), self.vocab);
        let d = self.values.shape().get(1).copied().unwrap_or(0);
        // The fields are public: check that they describe each other before indexing by them.
        let offsets_ok = self.offsets.first() == Some(&0)
            && self.offsets.windows(2).all(|w| w[0] <= w[1])
            && self.offsets.last() == Some(&self.rows.len());
        if !offsets_ok
            || self.values.shape() != [self.rows.len(), d]
            || self.rows.iter().any(|&r| r as usize >= v)
        {
            return Err(Error::Shape(format!(
                "sparse rows: {} offsets, {} rows below a vocabulary of {v} and values of shape \
                 {:?} do not describe each other (offsets must rise from 0 to the row count, each \
                 row be below the vocabulary, and the values be [rows, D])",
                self.offsets.len(),
                self.rows.len(),
                self.values.shape()
            )));
        }
        let values = self.values.to_vec::<f32>()?;
        let mut dense = psg_runtime::host_zeros::<f32>(&[b, v, d])?;
        for s in 0..b {
            for (j, &row) in (self.offsets[s]..).zip(self.rows_of(s)) {
                let at = (s * v + row as usize) * d;
                dense[at..at + d].copy_from_slice(&values[j * d..(j + 1) * d]);
            }
        }
        Tensor::from_vec(dense, &[b, v, d], &self.values.device())
    }
}

/// One parameter's gradients from the one pass.
#[derive(Clone, Debug)]
pub struct ParamGrad {
    /// The parameter's name within its layer: `"weight"` or `"bias"`.
    pub name: &'static str,
    /// Its per-sample gradients, as the sink asked.
    pub per_sample: PerSample,
    /// Its batch gradient: the sum over the batch of the per-sample gradients (the ordinary
    /// gradient of the summed loss), shaped like the parameter.
    pub batch: Tensor,
}

/// The gradients of every parameter of one layer.
#[derive(Clone, Debug)]
pub struct LayerGrads {
    /// One entry per parameter, weight first.
    pub params: Vec<ParamGrad>,
}

impl LayerGrads {
    /// The parameter called `name`, if the layer has it.
    pub fn get(&self, name: &str) -> Option<&ParamGrad> {
        self.params.iter().find(|p| p.name == name)
    }

    /// The weight's gradients.
    pub fn weight(&self) -> Option<&ParamGrad> {
        self.get("weight")
    }

    /// The bias's gradients, if the layer has a bias.
    pub fn bias(&self) -> Option<&ParamGrad> {
        self.get("bias")
    }
}
