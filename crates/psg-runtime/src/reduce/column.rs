//! `Column`: what a reduction's CPU implementation sees of one coordinate across the batch.

use std::fmt;

use crate::element::Element;
use crate::error::{Error, Result};

/// One column of a batch: the B values `g[0..B, p]` of one coordinate p, with the reduction's
/// per-sample vectors and scalar parameters, all in the accumulator type.
pub struct Column<'a, T: Element> {
    pub(super) values: &'a [T],
    pub(super) per_sample: &'a [&'a [T::Acc]],
    pub(super) scalars: &'a [T::Acc],
}

impl<T: Element> Clone for Column<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T: Element> Copy for Column<'_, T> {}

impl<'a, T: Element> Column<'a, T> {
    /// A column of `values` (B of them), with per-sample vectors of B values each and scalar
    /// parameters. [`Error::Shape`] when a per-sample vector's length is not B.
    pub fn new(
        values: &'a [T],
        per_sample: &'a [&'a [T::Acc]],
        scalars: &'a [T::Acc],
    ) -> Result<Self> {
        if let Some((i, v)) = per_sample
            .iter()
            .enumerate()
            .find(|(_, v)| v.len() != values.len())
        {
            return Err(Error::Shape(format!(
                "per-sample vector #{i} has {} values for a column of {}",
                v.len(),
                values.len()
            )));
        }
        Ok(Column {
            values,
            per_sample,
            scalars,
        })
    }

    /// B, the number of samples.
    #[inline]
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether the batch is empty (B = 0, which is valid).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Sample `b`'s value, converted to the accumulator type.
    ///
    /// # Panics
    ///
    /// If `b >= self.len()`: a bug in the calling reduction, not bad input.
    #[inline]
    pub fn load(&self, b: usize) -> T::Acc {
        self.values[b].to_acc()
    }

    /// The column's values in storage type, sample order.
    #[inline]
    pub fn values(&self) -> &'a [T] {
        self.values
    }

    /// The `i`-th per-sample vector's value at sample `b`.
    ///
    /// # Panics
    ///
    /// If `i` or `b` is out of range: a bug in the calling reduction, not bad input.
    #[inline]
    pub fn per_sample(&self, i: usize, b: usize) -> T::Acc {
        self.per_sample[i][b]
    }

    /// The `i`-th scalar parameter.
    ///
    /// # Panics
    ///
    /// If `i` is out of range: a bug in the calling reduction, not bad input.
    #[inline]
    pub fn scalar(&self, i: usize) -> T::Acc {
        self.scalars[i]
    }
}

impl<T: Element> fmt::Debug for Column<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Column")
            .field("len", &self.len())
            .field("per_sample", &self.per_sample.len())
            .field("scalars", &self.scalars)
            .finish()
    }
}
