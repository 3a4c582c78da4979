//! Element types of tensors, as a value (`DType`) the runtime can branch on.

use std::fmt;

pub use crate::element::{Accumulator, Element};

/// The element type of a tensor.
///
/// The order of [`DType::ALL`] (f32, f64, f16, bf16) is fixed: generated code indexes per-dtype tables
/// (such as `ReductionDef::cuda`) with [`DType::index`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    /// IEEE binary32.
    F32,
    /// IEEE binary64.
    F64,
    /// IEEE binary16 (`half::f16`).
    F16,
    /// bfloat16 (`half::bf16`).
    BF16,
}

impl DType {
    /// Every dtype, in the order of [`DType::index`].
    pub const ALL: [DType; 4] = [DType::F32, DType::F64, DType::F16, DType::BF16];

    /// Bytes per element.
    pub const fn size_in_bytes(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F64 => 8,
            DType::F16 | DType::BF16 => 2,
        }
    }

    /// The type arithmetic on this dtype is done in: f64 for f64, f32 for everything else.
    pub const fn accumulator(self) -> DType {
        match self {
            DType::F64 => DType::F64,
            DType::F32 | DType::F16 | DType::BF16 => DType::F32,
        }
    }

    /// This dtype's position in [`DType::ALL`].
    pub const fn index(self) -> usize {
        match self {
            DType::F32 => 0,
            DType::F64 => 1,
            DType::F16 => 2,
            DType::BF16 => 3,
        }
    }

    /// The lower-case name used in kernel names and messages (`"f32"`, `"bf16"`).
    pub const fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F64 => "f64",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
        }
    }
}

impl std::str::FromStr for DType {
    type Err = crate::Error;

    /// Parses a dtype's name as [`DType::name`] prints it (`"f32"`, `"bf16"`), in any case.
    fn from_str(text: &str) -> crate::Result<DType> {
        DType::ALL
            .into_iter()
            .find(|d| d.name().eq_ignore_ascii_case(text.trim()))
            .ok_or_else(|| {
                crate::Error::DType(format!(
                    "unknown dtype `{text}`: use one of f32, f64, f16, bf16"
                ))
            })
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_matches_all() {
        for (i, d) in DType::ALL.iter().enumerate() {
            assert_eq!(d.index(), i);
        }
    }

    #[test]
    fn sizes_names_and_accumulators() {
        let got: Vec<_> = DType::ALL
            .iter()
            .map(|d| (d.to_string(), d.size_in_bytes(), d.accumulator()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("f32".to_string(), 4, DType::F32),
                ("f64".to_string(), 8, DType::F64),
                ("f16".to_string(), 2, DType::F32),
                ("bf16".to_string(), 2, DType::F32),
            ]
        );
    }

    #[test]
    fn dtypes_parse_from_their_names() {
        for d in DType::ALL {
            assert_eq!(d.name().parse::<DType>().unwrap(), d);
            assert_eq!(d.name().to_uppercase().parse::<DType>().unwrap(), d);
        }
        let e = "f8".parse::<DType>().unwrap_err().to_string();
        assert!(e.contains("f8") && e.contains("bf16"), "{e}");
    }
}
