//! Rust element types of tensors (`Element`) and the types arithmetic is done in (`Accumulator`).

use std::any::TypeId;
use std::fmt::{Debug, Display};
use std::ops::{Add, AddAssign, Div, DivAssign, Mul, MulAssign, Neg, Sub, SubAssign};

use half::{bf16, f16};

use crate::dtype::DType;
use crate::error::{Error, Result};

/// A Rust type that can be a tensor element: `f32`, `f64`, `half::f16` and `half::bf16`.
///
/// Values are converted to [`Element::Acc`] to compute and back to store: f16 and bf16 widen to f32
/// exactly, and f32 narrows to f16 or bf16 rounding to nearest, ties to even (as `half` does).
pub trait Element: Copy + Send + Sync + 'static + Default {
    /// The runtime value of this type.
    const DTYPE: DType;
    /// The type arithmetic on this element is done in.
    type Acc: Accumulator;
    /// Widens to the accumulator type (exact).
    fn to_acc(self) -> Self::Acc;
    /// Narrows from the accumulator type (round to nearest, ties to even).
    fn from_acc(a: Self::Acc) -> Self;
}

/// A type arithmetic is done in: `f32` (for f32, f16 and bf16 data) or `f64` (for f64 data).
///
/// The methods mirror the float methods of `std` under the names the DSL uses, so that generic code
/// over an accumulator reads like code over a float. Nothing here drops NaN silently: there is no
/// `min`/`max` (Rust's drop NaN); write the comparison the non-finite policy asks for.
pub trait Accumulator:
    Element
    + PartialOrd
    + Debug
    + Display
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
    + SubAssign
    + MulAssign
    + DivAssign
{
    /// 0.
    const ZERO: Self;
    /// 1.
    const ONE: Self;
    /// A quiet NaN.
    const NAN: Self;
    /// +infinity.
    const INFINITY: Self;
    /// -infinity.
    const NEG_INFINITY: Self;
    /// Converts from f64 (rounding to nearest for f32).
    fn from_f64(v: f64) -> Self;
    /// Converts to f64 (exact).
    fn to_f64(self) -> f64;
    /// Converts a count (rounding to nearest for large counts).
    fn from_usize(n: usize) -> Self;
    /// Square root (NaN below 0).
    fn sqrt(self) -> Self;
    /// e^self.
    fn exp(self) -> Self;
    /// Natural logarithm.
    fn ln(self) -> Self;
    /// Absolute value.
    fn abs(self) -> Self;
    /// self^n.
    fn powi(self, n: i32) -> Self;
    /// self * a + b with one rounding (the GPU's `fma`).
    fn mul_add(self, a: Self, b: Self) -> Self;
    /// Whether this is NaN.
    fn is_nan(self) -> bool;
    /// Whether this is neither infinite nor NaN.
    fn is_finite(self) -> bool;
    /// IEEE total order (-NaN < -inf < ... < -0 < +0 < ... < +inf < +NaN), the order selections use.
    fn total_cmp(&self, other: &Self) -> std::cmp::Ordering;
}

macro_rules! impl_accumulator {
    ($t:ident, $dtype:expr) => {
        impl Element for $t {
            const DTYPE: DType = $dtype;
            type Acc = $t;
            #[inline(always)]
            fn to_acc(self) -> $t {
                self
            }
            #[inline(always)]
            fn from_acc(a: $t) -> $t {
                a
            }
        }

        impl Accumulator for $t {
            const ZERO: $t = 0.0;
            const ONE: $t = 1.0;
            const NAN: $t = $t::NAN;
            const INFINITY: $t = $t::INFINITY;
            const NEG_INFINITY: $t = $t::NEG_INFINITY;
            #[inline(always)]
            fn from_f64(v: f64) -> $t {
                v as $t
            }
            #[inline(always)]
            fn to_f64(self) -> f64 {
                self as f64
            }
            #[inline(always)]
            fn from_usize(n: usize) -> $t {
                n as $t
            }
            #[inline(always)]
            fn sqrt(self) -> $t {
                $t::sqrt(self)
            }
            #[inline(always)]
            fn exp(self) -> $t {
                $t::exp(self)
            }
            #[inline(always)]
            fn ln(self) -> $t {
                $t::ln(self)
            }
            #[inline(always)]
            fn abs(self) -> $t {
                $t::abs(self)
            }
            #[inline(always)]
            fn powi(self, n: i32) -> $t {
                $t::powi(self, n)
            }
            #[inline(always)]
            fn mul_add(self, a: $t, b: $t) -> $t {
                $t::mul_add(self, a, b)
            }
            #[inline(always)]
            fn is_nan(self) -> bool {
                $t::is_nan(self)
            }
            #[inline(always)]
            fn is_finite(self) -> bool {
                $t::is_finite(self)
            }
            #[inline(always)]
            fn total_cmp(&self, other: &$t) -> std::cmp::Ordering {
                $t::total_cmp(self, other)
            }
        }
    };
}

impl_accumulator!(f32, DType::F32);
impl_accumulator!(f64, DType::F64);

macro_rules! impl_half {
    ($t:ident, $dtype:expr) => {
        impl Element for $t {
            const DTYPE: DType = $dtype;
            type Acc = f32;
            #[inline(always)]
            fn to_acc(self) -> f32 {
                self.to_f32()
            }
            #[inline(always)]
            fn from_acc(a: f32) -> $t {
                $t::from_f32(a)
            }
        }
    };
}

impl_half!(f16, DType::F16);
impl_half!(bf16, DType::BF16);

/// Whether `T` is one of the four element types, whose every bit pattern is a valid value and which
/// have no padding. Checked by `TypeId`, not by `T::DTYPE`, so a foreign `Element` impl cannot make
/// the byte views below unsound.
fn is_plain_float<T: 'static>() -> bool {
    let id = TypeId::of::<T>();
    id == TypeId::of::<f32>()
        || id == TypeId::of::<f64>()
        || id == TypeId::of::<f16>()
        || id == TypeId::of::<bf16>()
}

/// Checks that `T` is the Rust type of `dtype` (and one of the four element types).
pub(crate) fn check_element<T: Element>(dtype: DType, what: &str) -> Result<()> {
    if T::DTYPE != dtype || !is_plain_float::<T>() {
        let asked = std::any::type_name::<T>();
        let asked = if asked == T::DTYPE.name() {
            asked.to_string()
        } else {
            format!("{} ({asked})", T::DTYPE)
        };
        return Err(Error::DType(format!(
            "{what} holds {dtype} elements, but they were asked for as {asked}; ask with the \
             matching Rust type (f32, f64, half::f16 or half::bf16), or convert first with \
             `.to_dtype(DType::{:?})`",
            T::DTYPE
        )));
    }
    Ok(())
}

/// The bytes of a slice of elements, for copies to a device.
pub(crate) fn as_bytes<T: Element>(data: &[T]) -> Result<&[u8]> {
    check_element::<T>(T::DTYPE, "this slice")?;
    // SAFETY: T is f32, f64, f16 or bf16 (checked by TypeId above): plain data with no padding, so
    // its memory is `size_of_val(data)` initialised bytes, and u8 has alignment 1.
    Ok(unsafe {
        std::slice::from_raw_parts(data.as_ptr().cast::<u8>(), std::mem::size_of_val(data))
    })
}

/// The bytes of a mutable slice of elements, for copies from a device.
pub(crate) fn as_bytes_mut<T: Element>(data: &mut [T]) -> Result<&mut [u8]> {
    check_element::<T>(T::DTYPE, "this slice")?;
    let len = std::mem::size_of_val(data);
    // SAFETY: as in `as_bytes`; in addition every bit pattern is a valid f32/f64/f16/bf16, so any
    // bytes written through the view leave valid elements.
    Ok(unsafe { std::slice::from_raw_parts_mut(data.as_mut_ptr().cast::<u8>(), len) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_types_widen_exactly_and_round_to_nearest_even() {
        let x = f16::from_f32(0.1);
        assert_eq!(x.to_acc(), x.to_f32());
        // 1 + 2^-11 is halfway between two f16 values: ties go to the even one, 1.0.
        assert_eq!(f16::from_acc(1.0 + 2f32.powi(-11)), f16::from_f32(1.0));
        assert_eq!(bf16::from_acc(1.0 + 2f32.powi(-8)), bf16::from_f32(1.0));
        assert_eq!(<bf16 as Element>::DTYPE, DType::BF16);
    }

    #[test]
    fn accumulator_methods_follow_std() {
        assert_eq!(<f64 as Accumulator>::from_f64(0.25), 0.25);
        assert_eq!(Accumulator::sqrt(4.0f32), 2.0);
        assert!(Accumulator::is_nan(<f32 as Accumulator>::NAN));
        assert_eq!(
            Accumulator::total_cmp(&-0.0f32, &0.0),
            std::cmp::Ordering::Less
        );
    }

    #[test]
    fn byte_views_cover_the_data() {
        let v = [1.0f32, 2.0];
        assert_eq!(as_bytes(&v).map(<[u8]>::len).ok(), Some(8));
        let mut w = [f16::ZERO; 3];
        assert_eq!(as_bytes_mut(&mut w).map(|b| b.len()).ok(), Some(6));
    }
}
