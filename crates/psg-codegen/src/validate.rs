//! Structural checks of a [`Reduction`] before it is scheduled. The macro reports user errors
//! with spans while lowering; these checks catch what reaches the IR some other way (a
//! hand-built IR, a lowering bug) with a message instead of wrong code.

use crate::ir::{Column, Output, ReduceOp, Reduction, Scalar};

/// Why a reduction cannot be generated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodegenError {
    /// The name is not a plain identifier usable in C and Rust.
    #[error("`{0}` is not a valid reduction name: use ASCII letters, digits and underscores, not starting with a digit (the name is also the CUDA kernel's)")]
    BadName(String),
    /// An index refers to something that does not exist (or a later `let`).
    #[error("reduction `{reduction}`: {what}")]
    BadReference {
        /// The reduction's name.
        reduction: String,
        /// What is wrong.
        what: String,
    },
    /// A tuple output with no values.
    #[error("reduction `{0}` returns no value: return a scalar, a tuple of scalars, or a Batch")]
    NoOutput(String),
}

/// Checks names, indices, and that element reads appear only inside columns.
pub fn validate(r: &Reduction) -> Result<(), CodegenError> {
    let ident_ok = |s: &str| {
        !s.is_empty()
            && !s.starts_with(|c: char| c.is_ascii_digit())
            && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    if !ident_ok(&r.name) {
        return Err(CodegenError::BadName(r.name.clone()));
    }
    let bad = |what: String| CodegenError::BadReference {
        reduction: r.name.clone(),
        what,
    };
    for (i, l) in r.lets.iter().enumerate() {
        if !ident_ok(&l.name) {
            return Err(bad(format!(
                "let binding name `{}` is not an identifier",
                l.name
            )));
        }
        check(&l.value, r, i, false).map_err(bad)?;
    }
    match &r.output {
        Output::Scalars(v) if v.is_empty() => return Err(CodegenError::NoOutput(r.name.clone())),
        Output::Scalars(v) => {
            for s in v {
                check(s, r, r.lets.len(), false).map_err(bad)?;
            }
        }
        Output::Batch(c) => check_column(c, r, r.lets.len()).map_err(bad)?,
    }
    Ok(())
}

fn check(e: &Scalar, r: &Reduction, lets_visible: usize, in_column: bool) -> Result<(), String> {
    match e {
        Scalar::Param(i) if *i >= r.scalars.len() => {
            Err(format!("scalar parameter #{i} does not exist"))
        }
        Scalar::Local(i) if *i >= lets_visible => {
            Err(format!("let #{i} is used before it is bound"))
        }
        Scalar::LoadPerSample(i) if *i >= r.per_sample.len() => {
            Err(format!("per-sample input #{i} does not exist"))
        }
        Scalar::Load | Scalar::LoadPerSample(_) if !in_column => {
            Err("a column element is used outside a column expression".into())
        }
        Scalar::Temp(_) => Err("temporaries are created by the scheduler only".into()),
        Scalar::Rank(_) if !in_column => Err("a rank is used outside a column expression".into()),
        Scalar::Rank(c) if c.value_and_keep().any(contains_rank) => {
            Err("a rank inside the column of another rank is not supported".into())
        }
        Scalar::Reduce(red) => {
            check_column(&red.column, r, lets_visible)?;
            if let ReduceOp::Kth(k) = &red.op {
                check(k, r, lets_visible, false)?;
            }
            Ok(())
        }
        other => other
            .children()
            .into_iter()
            .try_for_each(|c| check(c, r, lets_visible, in_column)),
    }
}

fn check_column(c: &Column, r: &Reduction, lets_visible: usize) -> Result<(), String> {
    check(&c.value, r, lets_visible, true)?;
    if let Some(k) = &c.keep {
        check(k, r, lets_visible, true)?;
    }
    Ok(())
}

fn contains_rank(e: &Scalar) -> bool {
    matches!(e, Scalar::Rank(_)) || e.children().into_iter().any(contains_rank)
}
