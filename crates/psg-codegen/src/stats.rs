//! The DSL's column statistics, written in terms of the primitive reductions of
//! [`crate::ir::ReduceOp`]. The conventions (PyTorch's where one exists) live here, once, for both
//! backends:
//!
//! - `mean` of an empty column is NaN (0 / 0), as `torch.mean`.
//! - `var(correction)` = sum((x - mean)^2) / max(n - correction, 0), as `torch.var`; so the
//!   variance of one sample with correction 1 is NaN, and `std` = sqrt(var).
//! - `min`/`max` propagate NaN, order -0 before +0, and are NaN for an empty column.
//! - `median` of an even count is the mean of the two middle values (NumPy); `median_low` is the
//!   lower one (`torch.median`); `quantile(q)` interpolates linearly as `torch.quantile`
//!   (`lerp` of the values at floor and ceil of q * (n - 1)); `kth(k)` is the k-th smallest
//!   (0-based). Order is IEEE total order on the bits. If any kept value is NaN, every order
//!   statistic is NaN (PyTorch's behaviour); an empty column or an index outside `[0, n)` gives
//!   NaN.

use crate::ir::{BinOp, Column, Func, ReduceOp, Scalar};

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

/// Variance with the given correction (1 = Bessel, as `torch.var`).
pub fn var(column: Column, correction: Scalar) -> Scalar {
    let mu = mean(column.clone());
    let dev = column.value.clone().bin(BinOp::Sub, mu);
    let squares = Column {
        value: dev.clone().bin(BinOp::Mul, dev),
        keep: column.keep.clone(),
    };
    let dof = Scalar::Call(
        Func::Max,
        vec![count(column).bin(BinOp::Sub, correction), Scalar::lit(0.0)],
    );
    sum(squares).bin(BinOp::Div, dof)
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
