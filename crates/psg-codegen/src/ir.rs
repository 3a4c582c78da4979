//! The intermediate representation of a batch reduction.
//!
//! A reduction is a function of one column: the `B` values of one coordinate across the batch.
//! Its body is a list of scalar `let` bindings followed by an [`Output`]. Column expressions are
//! lazy pipelines that exist only inside [`Reduce`] nodes and `Batch` outputs: a [`Column`] holds
//! the value of element `b` written in terms of [`Scalar::Load`] (`g[b]`) and
//! [`Scalar::LoadPerSample`] (`s_i[b]`), and an optional predicate that says whether element `b`
//! is kept (set by `filter`).
//!
//! Every node derives `PartialEq`, `Eq` and `Hash` (literals are stored as bits) so that identical
//! reductions are computed once (see [`crate::schedule`]).

/// A batch reduction, ready to be scheduled and emitted.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Reduction {
    /// The function's name, a valid C and Rust identifier; kernels are named `{name}_{dtype}`.
    pub name: String,
    /// Names of the `PerSample` inputs, in call order (length-`B` vectors).
    pub per_sample: Vec<String>,
    /// Names of the scalar parameters, in call order.
    pub scalars: Vec<String>,
    /// Scalar bindings, in order; [`Scalar::Local`]`(i)` refers to `lets[i]`.
    pub lets: Vec<Let>,
    /// What the reduction returns for each column.
    pub output: Output,
}

/// One `let` binding of a scalar value.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Let {
    /// The name the user gave it (kept for readable generated code).
    pub name: String,
    /// Its value.
    pub value: Scalar,
}

/// What a reduction returns.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Output {
    /// One or more scalars per column (a tuple when more than one).
    Scalars(Vec<Scalar>),
    /// A per-sample tensor of the input's shape; element `b` is the column's value at `b`, and
    /// elements a filter removed are written as zero.
    Batch(Column),
}

/// A scalar expression. Its type is the accumulator (`f32` for f32/f16/bf16 input, `f64` for
/// f64 input) or, for comparisons and logic, a boolean.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Scalar {
    /// A numeric literal, stored as the bits of an `f64`.
    Lit(u64),
    /// A boolean literal.
    Bool(bool),
    /// The i-th scalar parameter.
    Param(usize),
    /// The i-th `let` binding.
    Local(usize),
    /// `g[b]`: the current element of the column (only inside a [`Column`]).
    Load,
    /// `s_i[b]`: the current element of the i-th `PerSample` input (only inside a [`Column`]).
    LoadPerSample(usize),
    /// The number of samples `B` (the unfiltered column length).
    BatchSize,
    /// A unary operation.
    Unary(UnOp, Box<Scalar>),
    /// A binary operation.
    Binary(BinOp, Box<Scalar>, Box<Scalar>),
    /// `if cond { then } else { otherwise }`.
    Select(Box<Scalar>, Box<Scalar>, Box<Scalar>),
    /// A call to one of the DSL's scalar functions.
    Call(Func, Vec<Scalar>),
    /// A reduction of a column to one scalar.
    Reduce(Box<Reduce>),
    /// Placeholder for a scheduled reduction's result (created by the scheduler only).
    Temp(usize),
    /// The stable rank (0-based) of the current element's value in this column: the number of
    /// kept values before it in IEEE total order, but with every NaN after +inf whatever its
    /// sign bit (`psg_rank_key`), ties (NaNs among them) broken by sample index. Only inside a
    /// column; an inner loop over the column computes it.
    Rank(Box<Column>),
}

impl Scalar {
    /// A numeric literal.
    pub fn lit(value: f64) -> Scalar {
        Scalar::Lit(value.to_bits())
    }

    /// The value of a numeric literal node, if this is one.
    pub fn as_lit(&self) -> Option<f64> {
        match self {
            Scalar::Lit(bits) => Some(f64::from_bits(*bits)),
            _ => None,
        }
    }

    /// `self op rhs`.
    pub fn bin(self, op: BinOp, rhs: Scalar) -> Scalar {
        Scalar::Binary(op, Box::new(self), Box::new(rhs))
    }

    /// `if cond { a } else { b }`.
    pub fn select(cond: Scalar, a: Scalar, b: Scalar) -> Scalar {
        Scalar::Select(Box::new(cond), Box::new(a), Box::new(b))
    }

    /// A reduction node.
    pub fn reduce(op: ReduceOp, column: Column) -> Scalar {
        Scalar::Reduce(Box::new(Reduce { op, column }))
    }

    /// The NaN literal.
    pub fn nan() -> Scalar {
        Scalar::lit(f64::NAN)
    }

    /// This node with each operand of a unary, binary, select or call replaced by `f` of it;
    /// any other node (a leaf, a reduction, a rank) as it is. For rewrites of a tree that
    /// recurse through `f` and handle the other nodes themselves where they need to.
    pub fn map_operands(&self, mut f: impl FnMut(&Scalar) -> Scalar) -> Scalar {
        match self {
            Scalar::Unary(op, a) => Scalar::Unary(*op, Box::new(f(a))),
            Scalar::Binary(op, a, b) => Scalar::Binary(*op, Box::new(f(a)), Box::new(f(b))),
            Scalar::Select(c, a, b) => {
                Scalar::Select(Box::new(f(c)), Box::new(f(a)), Box::new(f(b)))
            }
            Scalar::Call(func, args) => Scalar::Call(*func, args.iter().map(f).collect()),
            _ => self.clone(),
        }
    }

    /// The direct child expressions (not descending into the columns of reductions; a rank's
    /// column is read at the current element, so it is a child).
    pub fn children(&self) -> Vec<&Scalar> {
        match self {
            Scalar::Unary(_, a) => vec![a],
            Scalar::Binary(_, a, b) => vec![a, b],
            Scalar::Select(c, a, b) => vec![c, a, b],
            Scalar::Call(_, args) => args.iter().collect(),
            Scalar::Rank(c) => c.value_and_keep().collect(),
            _ => Vec::new(),
        }
    }

    /// Whether the expression reads the current element (`Load` or `LoadPerSample`) outside any
    /// nested reduction.
    pub fn reads_element(&self) -> bool {
        matches!(self, Scalar::Load | Scalar::LoadPerSample(_))
            || self.children().into_iter().any(Scalar::reads_element)
    }
}

/// Unary operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnOp {
    /// Arithmetic negation.
    Neg,
    /// Logical not.
    Not,
}

/// Binary operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinOp {
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/`
    Div,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `&&`
    And,
    /// `||`
    Or,
}

impl BinOp {
    /// The operator's spelling, identical in C and Rust.
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::And => "&&",
            BinOp::Or => "||",
        }
    }

    /// Whether the result is a boolean.
    pub fn is_boolean(self) -> bool {
        !matches!(self, BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div)
    }
}

/// The DSL's scalar functions. Their semantics are fixed by the emitted preludes and identical on
/// both backends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Func {
    /// `|x|`.
    Abs,
    /// Square root (correctly rounded on both backends).
    Sqrt,
    /// `e^x`.
    Exp,
    /// Natural logarithm.
    Ln,
    /// Floor (used by quantile positions).
    Floor,
    /// `x^n` for an integer literal `n`, by repeated squaring in a fixed order.
    Powi(i32),
    /// Minimum: NaN if either is NaN; `-0 < +0`.
    Min,
    /// Maximum: NaN if either is NaN; `-0 < +0`.
    Max,
    /// `clamp(x, lo, hi)` = `min(max(x, lo), hi)`; lo > hi is rejected before launch.
    Clamp,
    /// Sign: -1, 0 for +-0, +1, NaN for NaN.
    Sign,
    /// The Gaussian density `normal_pdf(x, mu, sigma)`; see the preludes for sigma <= 0 / NaN.
    NormalPdf,
    /// The Gaussian kernel `normal_kernel(x, mu, sigma)` = `exp(-((x - mu) / sigma)^2 / 2)`: the
    /// density without its factor `1 / (sigma sqrt(2 pi))`; NaN unless sigma > 0 (and at
    /// `x == mu` where `1 / sigma` overflows: sigma below about 3e-39 in f32).
    NormalKernel,
    /// Whether the value is NaN (boolean).
    IsNan,
    /// Whether the value is finite (boolean).
    IsFinite,
    /// `lerp(a, b, w)` as PyTorch computes it (used by quantile), but `a` where an end is not
    /// finite and `w` is 0 or `a == b` (PyTorch's formula gives NaN there).
    Lerp,
    /// `a <= b` in IEEE total order (-0 < +0; boolean), used to find the value after an order
    /// statistic.
    TotalLe,
    /// `corrected_squares(ss, sd, n)`: a sum of squared deviations from a mean with the mean's
    /// rounding taken back, `ss - sd (sd / n)` from the sum of the deviations `sd`, and 0 where
    /// that is not above `n` ulps of `ss` (`ss` where it is infinite or NaN; see
    /// [`crate::stats::var`]). `ss` alone for 16-bit input,
    /// whose sums of equal values are exact in f32; its kernels come from a plan without `sd`
    /// ([`crate::stats::without_rounding_terms`]). Not in the DSL.
    CorrectedSquares,
}

impl Func {
    /// Number of arguments the function takes.
    pub fn arity(self) -> usize {
        match self {
            Func::Abs
            | Func::Sqrt
            | Func::Exp
            | Func::Ln
            | Func::Floor
            | Func::Powi(_)
            | Func::Sign
            | Func::IsNan
            | Func::IsFinite => 1,
            Func::Min | Func::Max | Func::TotalLe => 2,
            Func::Clamp
            | Func::NormalPdf
            | Func::NormalKernel
            | Func::Lerp
            | Func::CorrectedSquares => 3,
        }
    }

    /// Whether the function returns a boolean.
    pub fn is_boolean(self) -> bool {
        matches!(self, Func::IsNan | Func::IsFinite | Func::TotalLe)
    }

    /// The prelude helper that implements the function (same name in both languages).
    pub fn helper(self) -> &'static str {
        match self {
            Func::Abs => "psg_abs",
            Func::Sqrt => "psg_sqrt",
            Func::Exp => "psg_exp",
            Func::Ln => "psg_ln",
            Func::Floor => "psg_floor",
            Func::Powi(_) => "psg_powi",
            Func::Min => "psg_min",
            Func::Max => "psg_max",
            Func::Clamp => "psg_clamp",
            Func::Sign => "psg_sign",
            Func::NormalPdf => "psg_normal_pdf",
            Func::NormalKernel => "psg_normal_kernel",
            Func::IsNan => "psg_isnan",
            Func::IsFinite => "psg_isfinite",
            Func::Lerp => "psg_lerp",
            Func::TotalLe => "psg_total_le",
            Func::CorrectedSquares => "psg_corrected_squares",
        }
    }
}

/// A reduction of a column to one scalar: the primitive loops the kernels run.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Reduce {
    /// What to compute.
    pub op: ReduceOp,
    /// Over which column.
    pub column: Column,
}

/// The primitive reductions. Everything else (mean, var, std, median, quantile) is written in
/// terms of these by the front end, so that shared parts (a mean inside a variance and the user's
/// own mean) are computed once.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ReduceOp {
    /// Sum of the kept values, in sample order; 0 for an empty column.
    Sum,
    /// Number of kept values.
    Count,
    /// Minimum of the kept values (NaN propagates; `-0 < +0`); NaN when nothing is kept.
    Min,
    /// Maximum of the kept values (NaN propagates; `-0 < +0`); NaN when nothing is kept.
    Max,
    /// Minimum of the kept values in IEEE total order (the order of [`ReduceOp::Kth`]: a NaN
    /// is ordered by its bits, a positive one above `+inf`); when nothing is kept, the greatest
    /// value of that order (the NaN whose bits are all ones but the sign). Order statistics use
    /// it for the value after a selected one: the tiled kernel takes an integer minimum of the
    /// keys, where `Min` compares floats and tracks NaN (the other backends compare keys too).
    MinTotal,
    /// The k-th smallest kept value (0-based) in IEEE total order; `k` is an expression
    /// evaluated before the loop and truncated to an integer; NaN when `k` is outside
    /// `[0, count)`.
    Kth(Scalar),
}

impl ReduceOp {
    /// Whether the reduction is a single streaming pass (sum, count, min, max), which can share
    /// its loop with others; selection needs passes of its own.
    pub fn is_streaming(&self) -> bool {
        !matches!(self, ReduceOp::Kth(_))
    }
}

/// A lazy column: the value of element `b` and whether it is kept.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Column {
    /// The element's value, in terms of [`Scalar::Load`] and [`Scalar::LoadPerSample`].
    pub value: Scalar,
    /// Whether element `b` is kept; `None` keeps every element.
    pub keep: Option<Scalar>,
}

impl Column {
    /// The input column `g` itself.
    pub fn input() -> Column {
        Column {
            value: Scalar::Load,
            keep: None,
        }
    }

    /// The value and, if any, the keep-predicate.
    pub fn value_and_keep(&self) -> impl Iterator<Item = &Scalar> {
        std::iter::once(&self.value).chain(self.keep.as_ref())
    }

    /// This column with an extra keep-predicate (AND-ed with any existing one).
    pub fn filtered(self, predicate: Scalar) -> Column {
        let keep = match self.keep {
            None => predicate,
            Some(k) => k.bin(BinOp::And, predicate),
        };
        Column {
            value: self.value,
            keep: Some(keep),
        }
    }
}
