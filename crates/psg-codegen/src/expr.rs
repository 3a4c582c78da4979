//! Printing scalar expressions, shared by the CUDA and Rust emitters: the two languages spell
//! arithmetic, comparisons and calls alike and differ only in literals, conditionals, casts and
//! the one call that depends on the element type, which [`Syntax`] supplies.

use crate::ir::{BinOp, Column, Func, Scalar, UnOp};

/// The accumulator type of a generated kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Acc {
    /// 32-bit float (for f32, f16 and bf16 input).
    F32,
    /// 64-bit float (for f64 input).
    F64,
}

/// What differs between the languages when printing an expression.
pub trait Syntax {
    /// The accumulator type.
    fn acc(&self) -> Acc;
    /// A numeric literal of the accumulator type.
    fn literal(&self, value: f64) -> String;
    /// `if c { a } else { b }` as an expression.
    fn select(&self, cond: &str, then: &str, otherwise: &str) -> String;
    /// A boolean literal.
    fn boolean(&self, value: bool) -> String {
        value.to_string()
    }
    /// A binary operation on printed operands (with [`BinOp::symbol`] unless a language says
    /// otherwise).
    fn binary(&self, op: BinOp, a: &str, b: &str) -> String {
        format!("({a} {} {b})", op.symbol())
    }
    /// A call of a scalar function's prelude helper on printed arguments.
    fn call(&self, f: Func, args: &str) -> String {
        format!("{}({args})", f.helper())
    }
}

/// Names used for values in generated code (identical in both languages).
pub mod names {
    /// The current element of the column inside a loop.
    pub const ELEMENT: &str = "x";
    /// `B` as an accumulator value.
    pub const BATCH: &str = "nb";

    /// The i-th scalar parameter.
    pub fn scalar(i: usize) -> String {
        format!("s{i}")
    }

    /// The i-th per-sample input's current element.
    pub fn per_sample_element(i: usize) -> String {
        format!("ps{i}_b")
    }

    /// The i-th let binding (the user's name kept for readability).
    pub fn local(i: usize, name: &str) -> String {
        format!("l{i}_{name}")
    }

    /// The j-th rank column's rank of the current element.
    pub fn rank(j: usize) -> String {
        format!("rank{j}")
    }

    /// The i-th hoisted reduction.
    pub fn temp(i: usize) -> String {
        format!("t{i}")
    }
}

/// What names in an expression refer to.
pub struct Scope<'a> {
    /// The let names (for [`names::local`]).
    pub locals: &'a [String],
    /// The plan's distinct rank columns (for [`names::rank`]).
    pub ranks: &'a [Column],
    /// Appended to the names of lets and reductions: a kernel that computes two columns in one
    /// thread names each column's values apart (`""` elsewhere).
    pub suffix: &'a str,
}

/// Prints an expression.
pub fn print(expr: &Scalar, syntax: &dyn Syntax, scope: &Scope) -> String {
    let p = |e: &Scalar| print(e, syntax, scope);
    let locals = scope.locals;
    match expr {
        Scalar::Lit(bits) => syntax.literal(f64::from_bits(*bits)),
        Scalar::Bool(b) => syntax.boolean(*b),
        Scalar::Param(i) => names::scalar(*i),
        Scalar::Local(i) => format!("{}{}", names::local(*i, &locals[*i]), scope.suffix),
        Scalar::Load => names::ELEMENT.to_string(),
        Scalar::LoadPerSample(i) => names::per_sample_element(*i),
        Scalar::BatchSize => names::BATCH.to_string(),
        Scalar::Temp(i) => format!("{}{}", names::temp(*i), scope.suffix),
        // `-` before a negative literal (`-f32::MIN`) would be C's `--`, a decrement.
        Scalar::Unary(UnOp::Neg, a) => match p(a) {
            text if text.starts_with('-') => format!("(-({text}))"),
            text => format!("(-{text})"),
        },
        Scalar::Unary(UnOp::Not, a) => format!("(!{})", p(a)),
        Scalar::Binary(op, a, b) => syntax.binary(*op, &p(a), &p(b)),
        Scalar::Select(c, a, b) => syntax.select(&p(c), &p(a), &p(b)),
        Scalar::Call(Func::Powi(n), args) => format!("psg_powi({}, {n})", p(&args[0])),
        Scalar::Call(f, args) => {
            let args: Vec<String> = args.iter().map(p).collect();
            syntax.call(*f, &args.join(", "))
        }
        Scalar::Rank(c) => match scope.ranks.iter().position(|r| **c == *r) {
            Some(j) => names::rank(j),
            None => unreachable!("the plan lists every rank column"),
        },
        Scalar::Reduce(_) => {
            unreachable!("reductions are hoisted into temporaries before printing")
        }
    }
}

/// The shortest decimal text that reads back as `value` in the accumulator type, or `None` for
/// values that are not finite in it (each language spells those its own way): `1e300` is
/// infinite in f32, as `1e300_f64 as f32` is.
pub fn finite_literal(value: f64, acc: Acc) -> Option<String> {
    let text = match acc {
        Acc::F32 if (value as f32).is_finite() => format!("{:?}", value as f32),
        Acc::F64 if value.is_finite() => format!("{value:?}"),
        _ => return None,
    };
    // `{:?}` prints e.g. `1e-7`, `0.5`, `3.0`; make sure it reads as a float in C too.
    if text.contains('.') || text.contains('e') {
        Some(text)
    } else {
        Some(format!("{text}.0"))
    }
}

/// Which elements a loop body reads: `g[b]`, and which per-sample inputs, so that loops load only
/// what they use.
pub fn element_reads<'a>(exprs: impl IntoIterator<Item = &'a Scalar>) -> (bool, Vec<usize>) {
    fn walk(e: &Scalar, g: &mut bool, ps: &mut Vec<usize>) {
        match e {
            Scalar::Load => *g = true,
            Scalar::LoadPerSample(i) if !ps.contains(i) => ps.push(*i),
            other => other.children().into_iter().for_each(|c| walk(c, g, ps)),
        }
    }
    let (mut g, mut ps) = (false, Vec::new());
    for e in exprs {
        walk(e, &mut g, &mut ps);
    }
    ps.sort_unstable();
    (g, ps)
}

/// The distinct rank columns that the given expressions use at the current element (not inside
/// nested ranks, which validation rejects).
pub fn rank_columns<'a>(exprs: impl IntoIterator<Item = &'a Scalar>) -> Vec<&'a Column> {
    fn walk<'a>(e: &'a Scalar, out: &mut Vec<&'a Column>) {
        if let Scalar::Rank(c) = e {
            if !out.contains(&&**c) {
                out.push(c);
            }
        } else {
            e.children().into_iter().for_each(|c| walk(c, out));
        }
    }
    let mut out = Vec::new();
    for e in exprs {
        walk(e, &mut out);
    }
    out
}
