//! The DSL's column statistics, written in terms of the primitive reductions of
//! [`crate::ir::ReduceOp`]. The conventions (PyTorch's where one exists) live here, once, for both
//! backends:
//!
//! - `mean` of an empty column is NaN (0 / 0), as `torch.mean`.
//! - `var(correction)` = sum((x - mean)^2) / max(n - correction, 0), as `torch.var`; so the
//!   variance of one sample with correction 1 is NaN, and `std` = sqrt(var). The sum of squares
//!   takes back the mean's rounding (see [`var`]): a column of equal values has variance 0.
//! - `min`/`max` propagate NaN, order -0 before +0, and are NaN for an empty column.
//! - `median` of an even count is the mean of the two middle values (NumPy); `median_low` is the
//!   lower one (`torch.median`); `quantile(q)` interpolates linearly as `torch.quantile`
//!   (`lerp` of the values at floor and ceil of q * (n - 1), an infinite value kept where no
//!   interpolation is needed); `kth(k)` is the k-th smallest
//!   (0-based). Order is IEEE total order on the bits. If any kept value is NaN, every order
//!   statistic is NaN (PyTorch's behaviour); an empty column or an index outside `[0, n)` gives
//!   NaN.

use crate::ir::{BinOp, Column, Func, Let, Output, Reduce, ReduceOp, Reduction, Scalar};

/// Sum of the kept values (0 when none).
pub fn sum(column: Column) -> Scalar {
    Scalar::reduce(ReduceOp::Sum, column)
}

/// Number of kept values.
pub fn count(column: Column) -> Scalar {
    Scalar::reduce(ReduceOp::Count, column)
}

/// Mean of the kept values; NaN when none.
pub fn mean(column: Column) -> Scalar {
    let n = count(column.clone());
    sum(column).bin(BinOp::Div, n)
}

/// Variance with the given correction (1 = Bessel, as `torch.var`), by the corrected two-pass
/// algorithm (Chan, Golub and LeVeque): with `d = x - mean`, the sum of squares is
/// `sum(d^2) - sum(d) (sum(d) / n)` ([`Func::CorrectedSquares`]), and 0 where that is within
/// `n` ulps of `sum(d^2)`, the rounding of the sum itself. The second term takes back the
/// rounding of the mean, at one more sum in the same pass. For a column of equal values whose
/// mean rounds (seven f32 copies of 0.1 sum to 0.70000005) every `d` is the same few ulps, the
/// two terms agree to their rounding (exactly, at small B) and the variance is 0, where
/// `sum(d^2)` alone gave a std of 8e-9 and a density weighting by it weights near 5e7 (NumPy's
/// float32 `std` gives that 8e-9; PyTorch's Welford gives 0). Without the floor, 999 f32 copies
/// of 1.1 kept a std of 1.7e-10 against deviations of 6e-7, and a z-score rule with k = 3
/// removed them all. Where the squares overflow the variance stays infinite.
///
/// For 16-bit input the sum of squares stands alone: a sum of equal bf16 (f16) values is exact
/// in f32 below 2^16 (2^13) samples, so their mean is too, and the kernels that read 16-bit
/// tiles, bound by the instructions they issue, would pay for the second sum (bf16 z-score mean
/// and density-weighted sum: 6-9% on an H200 at g[256, 4M]). A column computed from 16-bit
/// values in f32 (`x * f`) goes without it too, and can keep a std at the rounding of its mean.
pub fn var(column: Column, correction: Scalar) -> Scalar {
    let n = count(column.clone());
    let mu = mean(column.clone());
    let dev = column.value.clone().bin(BinOp::Sub, mu);
    let squares = sum(Column {
        value: dev.clone().bin(BinOp::Mul, dev.clone()),
        keep: column.keep.clone(),
    });
    let devs = sum(Column {
        value: dev,
        keep: column.keep.clone(),
    });
    let total = Scalar::Call(Func::CorrectedSquares, vec![squares, devs, n.clone()]);
    let dof = Scalar::Call(
        Func::Max,
        vec![n.bin(BinOp::Sub, correction), Scalar::lit(0.0)],
    );
    total.bin(BinOp::Div, dof)
}

/// Standard deviation: the square root of [`var`].
pub fn std(column: Column, correction: Scalar) -> Scalar {
    Scalar::Call(Func::Sqrt, vec![var(column, correction)])
}

/// Minimum (NaN propagates; NaN when empty).
pub fn min(column: Column) -> Scalar {
    Scalar::reduce(ReduceOp::Min, column)
}

/// Maximum (NaN propagates; NaN when empty).
pub fn max(column: Column) -> Scalar {
    Scalar::reduce(ReduceOp::Max, column)
}

/// The k-th smallest kept value (0-based; `k` truncated toward zero), NaN if any kept value is
/// NaN, if the column is empty or if `k` is outside `[0, n)`.
pub fn kth(column: Column, k: Scalar) -> Scalar {
    nan_guard(column.clone(), raw_kth(column, k))
}

/// The median: the middle value, or the mean of the two middle values for an even count. One
/// selection finds the lower middle value; the upper one comes from a streaming pass (see
/// [`next_in_order`]) instead of a second selection.
pub fn median(column: Column) -> Scalar {
    let n = count(column.clone());
    let lo = floor(
        n.clone()
            .bin(BinOp::Sub, Scalar::lit(1.0))
            .bin(BinOp::Div, Scalar::lit(2.0)),
    );
    let low = raw_kth(column.clone(), lo.clone());
    let high = next_in_order(column.clone(), low.clone(), lo);
    let odd = n
        .clone()
        .bin(
            BinOp::Sub,
            Scalar::lit(2.0).bin(BinOp::Mul, floor(n.bin(BinOp::Div, Scalar::lit(2.0)))),
        )
        .bin(BinOp::Eq, Scalar::lit(1.0));
    let mid = low
        .clone()
        .bin(BinOp::Add, high)
        .bin(BinOp::Div, Scalar::lit(2.0));
    nan_guard(column, Scalar::select(odd, low, mid))
}

/// The (k + 1)-th smallest kept value, given `value`, the k-th: `value` again when more than
/// k + 1 kept values are at or below it in total order, else the smallest kept value above it
/// in total order (so a positive NaN above it is not propagated: wrap the result in a NaN guard,
/// as the order statistics here do; with no value above, the greatest NaN, see
/// [`ReduceOp::MinTotal`]). One streaming pass (a count and a minimum) instead of a second
/// selection.
pub fn next_in_order(column: Column, value: Scalar, k: Scalar) -> Scalar {
    let at_or_below = Scalar::Call(Func::TotalLe, vec![column.value.clone(), value.clone()]);
    let above = Scalar::Unary(crate::ir::UnOp::Not, Box::new(at_or_below.clone()));
    let c = count(column.clone().filtered(at_or_below));
    // Where it matters (some kept value above `value`) it is the `min` of those values, unless one
    // is NaN, and then `nan_guard` makes every order statistic NaN.
    let next = Scalar::reduce(ReduceOp::MinTotal, column.filtered(above));
    Scalar::select(
        c.bin(BinOp::Gt, k.bin(BinOp::Add, Scalar::lit(1.0))),
        value,
        next,
    )
}

/// The lower median (`torch.median`).
pub fn median_low(column: Column) -> Scalar {
    let n = count(column.clone());
    let lo = floor(
        n.bin(BinOp::Sub, Scalar::lit(1.0))
            .bin(BinOp::Div, Scalar::lit(2.0)),
    );
    nan_guard(column.clone(), raw_kth(column, lo))
}

/// The q-quantile with linear interpolation (`torch.quantile`'s default); NaN for q outside
/// [0, 1] (the built-ins reject that before launch).
pub fn quantile(column: Column, q: Scalar) -> Scalar {
    let n = count(column.clone());
    let pos = q
        .clone()
        .bin(BinOp::Mul, n.bin(BinOp::Sub, Scalar::lit(1.0)));
    let lo = floor(pos.clone());
    let hi = Scalar::select(
        pos.clone().bin(BinOp::Gt, lo.clone()),
        lo.clone().bin(BinOp::Add, Scalar::lit(1.0)),
        lo.clone(),
    );
    let weight = pos.bin(BinOp::Sub, lo.clone());
    // The value at `hi` is the one after the value at `lo` (when they differ): one streaming
    // pass instead of a second selection.
    let low = raw_kth(column.clone(), lo.clone());
    let high = Scalar::select(
        hi.bin(BinOp::Gt, lo.clone()),
        next_in_order(column.clone(), low.clone(), lo),
        low.clone(),
    );
    let value = Scalar::Call(Func::Lerp, vec![low, high, weight]);
    let in_range = q
        .clone()
        .bin(BinOp::Ge, Scalar::lit(0.0))
        .bin(BinOp::And, q.bin(BinOp::Le, Scalar::lit(1.0)));
    nan_guard(column, Scalar::select(in_range, value, Scalar::nan()))
}

fn raw_kth(column: Column, k: Scalar) -> Scalar {
    Scalar::reduce(ReduceOp::Kth(k), column)
}

fn floor(x: Scalar) -> Scalar {
    Scalar::Call(Func::Floor, vec![x])
}

/// NaN if any kept value of the column is NaN, else `value`.
fn nan_guard(column: Column, value: Scalar) -> Scalar {
    let is_nan = Scalar::Call(Func::IsNan, vec![column.value.clone()]);
    let nans = count(column.filtered(is_nan));
    Scalar::select(nans.bin(BinOp::Gt, Scalar::lit(0.0)), Scalar::nan(), value)
}

/// The reduction with every [`Func::CorrectedSquares`] replaced by its sum of squares, what it is
/// for 16-bit input: the plan of the kernels for 16-bit input, which then have no sum of
/// deviations to compute.
pub fn without_rounding_terms(reduction: &Reduction) -> Reduction {
    Reduction {
        lets: reduction
            .lets
            .iter()
            .map(|l| Let {
                value: drop_rounding_terms(&l.value),
                ..l.clone()
            })
            .collect(),
        output: match &reduction.output {
            Output::Scalars(values) => {
                Output::Scalars(values.iter().map(drop_rounding_terms).collect())
            }
            Output::Batch(column) => Output::Batch(drop_in_column(column)),
        },
        ..reduction.clone()
    }
}

fn drop_in_column(column: &Column) -> Column {
    Column {
        value: drop_rounding_terms(&column.value),
        keep: column.keep.as_ref().map(drop_rounding_terms),
    }
}

fn drop_rounding_terms(e: &Scalar) -> Scalar {
    match e {
        Scalar::Call(Func::CorrectedSquares, args) => drop_rounding_terms(&args[0]),
        Scalar::Reduce(r) => Scalar::Reduce(Box::new(Reduce {
            op: match &r.op {
                ReduceOp::Kth(k) => ReduceOp::Kth(drop_rounding_terms(k)),
                other => other.clone(),
            },
            column: drop_in_column(&r.column),
        })),
        Scalar::Rank(c) => Scalar::Rank(Box::new(drop_in_column(c))),
        _ => e.map_operands(drop_rounding_terms),
    }
}
