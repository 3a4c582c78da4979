//! Lowers the body of a `#[batch_reduce]` function to psg-codegen's IR. Everything outside the
//! DSL's grammar is a `syn::Error` on the offending expression that says what is allowed.

use psg_codegen::ir::{BinOp, Column, Func, Let, Output, Scalar, UnOp};
use psg_codegen::stats;
use syn::ext::IdentExt;
use syn::{spanned::Spanned, Block, Error, Expr, Lit, Pat, Stmt};

use crate::signature::{ParamKind, Returns, Signature};

const COLUMN_METHODS: &str = "column methods: map(|x| ..), zip(per_sample), filter(|x| ..), sign(), with_rank(), \
    sum(), mean(), var(), var(correction), std(), std(correction), min(), max(), count(), median(), \
    median_low(), quantile(q), kth(k)";
const SCALAR_METHODS: &str =
    "scalar methods: abs(), sqrt(), exp(), ln(), floor(), powi(n), min(y), \
    max(y), clamp(lo, hi), sign(), is_nan(), is_finite()";
const FUNCTIONS: &str = "the free functions are normal_pdf(x, mu, sigma) and \
    normal_kernel(x, mu, sigma); scalar functions are methods (x.abs(), x.sqrt(), ...)";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ty {
    Num,
    Bool,
}

#[derive(Clone, Debug)]
enum Value {
    Scalar(Scalar, Ty),
    /// A lazy column: one expression per lane (zip adds lanes, map folds them into one).
    Column {
        lanes: Vec<Scalar>,
        keep: Option<Scalar>,
    },
    /// A `PerSample` input, usable only as `zip`'s argument.
    PerSample(usize),
}

enum Entry {
    Bind {
        name: String,
        value: Value,
        closure_param: bool,
        /// A `let` of integer literals alone (`let n = 7;`, see [`Lowerer::integer_literals`]),
        /// which Rust would type as an integer.
        integer: bool,
    },
    /// Closure parameters bound before a barrier are invisible after it: a reduction nested in a
    /// closure runs its own loop and cannot read the enclosing closure's element.
    Barrier,
}

/// The lowering state: the scope stack and the lets emitted so far.
pub struct Lowerer {
    env: Vec<Entry>,
    lets: Vec<Let>,
}

/// Lowers a function body.
pub fn lower(sig: &Signature, block: &Block) -> Result<(Vec<Let>, Output), Error> {
    let mut l = Lowerer {
        env: Vec::new(),
        lets: Vec::new(),
    };
    for p in &sig.params {
        let value = match p.kind {
            ParamKind::Batch => Value::Column {
                lanes: vec![Scalar::Load],
                keep: None,
            },
            ParamKind::PerSample(i) => Value::PerSample(i),
            ParamKind::Scalar(i, _) => Value::Scalar(Scalar::Param(i), Ty::Num),
        };
        l.bind(p.name.unraw().to_string(), value, false);
    }
    let Some((last, init)) = block.stmts.split_last() else {
        return Err(Error::new(
            block.span(),
            "empty body: end with the value to return",
        ));
    };
    for stmt in init {
        l.statement(stmt)?;
    }
    let Stmt::Expr(tail, None) = last else {
        let message = match last {
            Stmt::Expr(Expr::Return(_), _) => {
                "`return` is not supported: end the body with the value (`g.sum()`, no `;`)"
            }
            _ => "the body must end with the value to return (no `;`)",
        };
        return Err(Error::new(last.span(), message));
    };
    let output = match sig.returns {
        Returns::Scalars(1) => {
            if let Expr::Tuple(t) = strip(tail) {
                return Err(Error::new(t.span(), format!("the signature returns one value (`f32`), this tuple has {}: declare `-> ({})` to return them all", t.elems.len(), vec!["f32"; t.elems.len()].join(", "))));
            }
            Output::Scalars(vec![l.number(tail)?])
        }
        Returns::Scalars(n) => {
            let Expr::Tuple(t) = strip(tail) else {
                return Err(Error::new(tail.span(), format!("the signature returns {n} values: end with a tuple of {n} scalars")));
            };
            if t.elems.len() != n {
                return Err(Error::new(t.span(), format!("the signature returns {n} values, this tuple has {}", t.elems.len())));
            }
            Output::Scalars(t.elems.iter().map(|e| l.number(e)).collect::<Result<_, _>>()?)
        }
        Returns::Batch => match l.expr(tail)? {
            Value::Column { lanes, keep } => Output::Batch(single_lane(tail, lanes, keep)?),
            _ => return Err(Error::new(tail.span(), "the signature returns `Batch`: end with a column expression such as `g.map(|x| ...)`")),
        },
    };
    Ok((l.lets, output))
}

const COMPOUND_ASSIGNMENT: &str = "assignment is not supported: a batch reduction has no mutable \
    state; bind a new name with `let`, and use column reductions such as `.sum()` instead of \
    accumulating";

/// Whether `op` is `+=`, `-=`, `*=`, `/=`, `%=` or a bitwise or shift assignment.
fn compound_assignment(op: &syn::BinOp) -> bool {
    use syn::BinOp as B;
    matches!(
        op,
        B::AddAssign(_)
            | B::SubAssign(_)
            | B::MulAssign(_)
            | B::DivAssign(_)
            | B::RemAssign(_)
            | B::BitXorAssign(_)
            | B::BitAndAssign(_)
            | B::BitOrAssign(_)
            | B::ShlAssign(_)
            | B::ShrAssign(_)
    )
}

fn strip(e: &Expr) -> &Expr {
    match e {
        Expr::Paren(p) => strip(&p.expr),
        Expr::Group(g) => strip(&g.expr),
        other => other,
    }
}

fn single_lane(
    at: &impl Spanned,
    lanes: Vec<Scalar>,
    keep: Option<Scalar>,
) -> Result<Column, Error> {
    match <[Scalar; 1]>::try_from(lanes) {
        Ok([value]) => Ok(Column { value, keep }),
        Err(lanes) if matches!(lanes.last(), Some(Scalar::Rank(_))) => Err(Error::new(
            at.span(),
            "this column pairs each value with its rank (`with_rank`): take one back first, e.g. \
             `.map(|x, r| x)`",
        )),
        Err(lanes) => Err(Error::new(
            at.span(),
            format!("this column zips {} values per sample: fold them into one with `.map(|x, s| ...)` first", lanes.len()),
        )),
    }
}

impl Lowerer {
    fn bind(&mut self, name: String, value: Value, closure_param: bool) {
        self.env.push(Entry::Bind {
            name,
            value,
            closure_param,
            integer: false,
        });
    }

    /// Whether a block is one expression of integer literals alone (see
    /// [`Lowerer::integer_literals`]).
    fn integer_block(&self, b: &Block) -> bool {
        matches!(b.stmts.as_slice(), [Stmt::Expr(e, None)] if self.integer_literals(e))
    }

    /// Whether `e` is integer literals alone (`7`, `-(3 + 4) * 2`), `let` names bound to them
    /// (`n / 2` after `let n = 7;`), or an `if` or block whose every value is: arithmetic Rust
    /// would do in integers.
    fn integer_literals(&self, e: &Expr) -> bool {
        match e {
            // `7f32` and `1_f64` are integer tokens with a float suffix: floats in Rust too.
            Expr::Lit(l) => match &l.lit {
                Lit::Int(i) => !matches!(i.suffix(), "f32" | "f64"),
                _ => false,
            },
            Expr::Path(p) => p.path.get_ident().is_some_and(|ident| {
                let name = ident.unraw().to_string();
                self.env.iter().rev().find_map(|entry| match entry {
                    Entry::Bind {
                        name: n, integer, ..
                    } if *n == name => Some(*integer),
                    _ => None,
                }) == Some(true)
            }),
            Expr::Paren(p) => self.integer_literals(&p.expr),
            Expr::Group(g) => self.integer_literals(&g.expr),
            // `if c { 7 } else { 9 }` and `{ 7 }`: integers in Rust when every value is.
            Expr::Block(b) => self.integer_block(&b.block),
            Expr::If(i) => {
                self.integer_block(&i.then_branch)
                    && i.else_branch
                        .as_ref()
                        .is_some_and(|(_, e)| self.integer_literals(e))
            }
            Expr::Unary(u) => matches!(u.op, syn::UnOp::Neg(_)) && self.integer_literals(&u.expr),
            // `a.min(3)` after `let a = 7;`: Rust's integer `min`, `max`, `clamp` and `abs`.
            Expr::MethodCall(m) => {
                matches!(
                    m.method.to_string().as_str(),
                    "min" | "max" | "clamp" | "abs"
                ) && self.integer_literals(&m.receiver)
                    && m.args.iter().all(|a| self.integer_literals(a))
            }
            Expr::Binary(b) => {
                matches!(
                    b.op,
                    syn::BinOp::Add(_)
                        | syn::BinOp::Sub(_)
                        | syn::BinOp::Mul(_)
                        | syn::BinOp::Div(_)
                ) && self.integer_literals(&b.left)
                    && self.integer_literals(&b.right)
            }
            _ => false,
        }
    }

    fn lookup(&self, ident: &syn::Ident) -> Result<Value, Error> {
        let name = ident.unraw().to_string();
        let mut behind_barrier = false;
        for entry in self.env.iter().rev() {
            match entry {
                Entry::Barrier => behind_barrier = true,
                Entry::Bind {
                    name: n,
                    value,
                    closure_param,
                    ..
                } if *n == name => {
                    if *closure_param && behind_barrier {
                        return Err(Error::new(
                            ident.span(),
                            format!("`{name}` is the element of an enclosing closure and cannot be used inside a nested column reduction (that would be a loop per element); compute the reduction before the closure with `let`"),
                        ));
                    }
                    return Ok(value.clone());
                }
                Entry::Bind { .. } => {}
            }
        }
        Err(Error::new(ident.span(), format!("unknown name `{name}`: only parameters, `let` bindings and closure parameters are in scope")))
    }

    fn statement(&mut self, stmt: &Stmt) -> Result<(), Error> {
        match stmt {
            Stmt::Local(local) => {
                let Some(init) = &local.init else {
                    return Err(Error::new(
                        local.span(),
                        "`let` needs a value: mutable state is not supported",
                    ));
                };
                if let Some((_, diverge)) = &init.diverge {
                    return Err(Error::new(
                        diverge.span(),
                        "`let ... else` is not supported",
                    ));
                }
                self.bind_pattern(&local.pat, &init.expr)
            }
            Stmt::Expr(
                e @ (Expr::ForLoop(_)
                | Expr::While(_)
                | Expr::Loop(_)
                | Expr::Assign(_)
                | Expr::Return(_)
                | Expr::Macro(_)),
                _,
            ) => Err(unsupported(e)),
            // `m += 1.0;`: syn parses compound assignments as binary expressions.
            Stmt::Expr(Expr::Binary(b), _) if compound_assignment(&b.op) => {
                Err(Error::new(b.span(), COMPOUND_ASSIGNMENT))
            }
            Stmt::Expr(e, _) if mentions_return(quote::ToTokens::to_token_stream(e)) => {
                Err(Error::new(
                    e.span(),
                    "`return` is not supported, nor an early exit: make the body one expression, \
                     e.g. `if c { a } else { b }` as its last line",
                ))
            }
            Stmt::Expr(e, _) => Err(Error::new(
                e.span(),
                "this statement's value is dropped, and a batch reduction has no side effects, so \
                 it would do nothing: bind it with `let name = ...;`, or make it the body's last \
                 expression (without `;`)",
            )),
            Stmt::Item(item) => Err(Error::new(
                item.span(),
                "items (fn, struct, use, ...) cannot be declared inside a batch reduction",
            )),
            Stmt::Macro(m) => Err(Error::new(
                m.span(),
                "macros are not supported inside a batch reduction",
            )),
        }
    }

    /// Binds `pat` to `value` as Rust's `let` does: every value is lowered before any name is
    /// bound, so `let (lo, hi) = (lo - d, hi + d);` reads the earlier `lo` on both sides.
    fn bind_pattern(&mut self, pat: &Pat, value: &Expr) -> Result<(), Error> {
        if let Pat::Wild(w) = pat {
            return Err(Error::new(
                w.span(),
                "`let _ = ...;` would do nothing: a batch reduction has no side effects; drop the statement (inside a tuple pattern, `_` skips a value: `let (mu, _) = (g.mean(), g.std());`)",
            ));
        }
        let mut bound = Vec::new();
        self.bind_typed(pat, value, false, &mut bound)?;
        for (i, (ident, _)) in bound.iter().enumerate() {
            if bound[..i]
                .iter()
                .any(|(earlier, _)| earlier.unraw() == ident.unraw())
            {
                return Err(Error::new(
                    ident.span(),
                    format!("`{ident}` is bound more than once in this pattern"),
                ));
            }
        }
        self.env.extend(bound.into_iter().map(|(_, entry)| entry));
        Ok(())
    }

    /// [`Lowerer::bind_pattern`]'s lowering: the names of `pat` and their entries, added to
    /// `bound` (not yet in scope); `float`: the pattern is annotated `f32` or `f64`, so an integer
    /// literal bound to it is a float in Rust too.
    fn bind_typed(
        &mut self,
        pat: &Pat,
        value: &Expr,
        float: bool,
        bound: &mut Vec<(syn::Ident, Entry)>,
    ) -> Result<(), Error> {
        match pat {
            Pat::Ident(pi) => {
                if pi.mutability.is_some() {
                    return Err(Error::new(pi.span(), "`let mut` is not supported: a batch reduction has no mutable state (the GPU kernel is a pure function of the column); bind a new name instead"));
                }
                let integer = !float && self.integer_literals(value);
                let v = self.expr(value)?;
                let name = pi.ident.unraw().to_string();
                let v = match v {
                    Value::Scalar(s, ty) => {
                        self.lets.push(Let {
                            name: generated_name(&pi.ident),
                            value: s,
                        });
                        Value::Scalar(Scalar::Local(self.lets.len() - 1), ty)
                    }
                    other => other,
                };
                bound.push((
                    pi.ident.clone(),
                    Entry::Bind {
                        name,
                        value: v,
                        closure_param: false,
                        integer,
                    },
                ));
                Ok(())
            }
            Pat::Type(pt) => {
                refuse_integer_type(&pt.ty)?;
                let float = matches!(&*pt.ty, syn::Type::Path(t)
                    if t.qself.is_none() && (t.path.is_ident("f32") || t.path.is_ident("f64")));
                self.bind_typed(&pt.pat, value, float, bound)
            }
            // `_` in a tuple pattern: the value is checked (as Rust type-checks it) and dropped.
            Pat::Wild(_) => self.expr(value).map(|_| ()),
            Pat::Tuple(pt) => {
                let Expr::Tuple(values) = strip(value) else {
                    return Err(Error::new(value.span(), "a tuple pattern needs a tuple of values on the right, e.g. `let (mu, s) = (g.mean(), g.std());`"));
                };
                if pt.elems.len() != values.elems.len() {
                    return Err(Error::new(
                        pt.span(),
                        "the tuple pattern and the tuple of values differ in length",
                    ));
                }
                for (p, v) in pt.elems.iter().zip(&values.elems) {
                    self.bind_typed(p, v, false, bound)?;
                }
                Ok(())
            }
            other => Err(Error::new(
                other.span(),
                "unsupported pattern: use a name or a tuple of names",
            )),
        }
    }

    /// Lowers an expression that must be a number.
    fn number(&mut self, e: &Expr) -> Result<Scalar, Error> {
        let v = self.expr(e)?;
        as_number(v, e)
    }

    /// Lowers an expression that must be a boolean.
    fn boolean(&mut self, e: &Expr) -> Result<Scalar, Error> {
        match self.expr(e)? {
            Value::Scalar(s, Ty::Bool) => Ok(s),
            _ => Err(Error::new(
                e.span(),
                "expected a boolean (a comparison such as `x > 0.0`)",
            )),
        }
    }

    fn expr(&mut self, e: &Expr) -> Result<Value, Error> {
        let num = |s| Ok(Value::Scalar(s, Ty::Num));
        match e {
            Expr::Paren(p) => self.expr(&p.expr),
            Expr::Group(g) => self.expr(&g.expr),
            Expr::Lit(l) => match &l.lit {
                Lit::Float(f) => num(Scalar::lit(f.base10_parse::<f64>()?)),
                Lit::Int(i) if !matches!(i.suffix(), "" | "f32" | "f64") => Err(Error::new(
                    i.span(),
                    format!(
                        "`{i}` is a `{}` literal: psg computes every number as a float (the accumulator type); write `{}` or `{}.0`",
                        i.suffix(),
                        i.base10_digits(),
                        i.base10_digits()
                    ),
                )),
                Lit::Int(i) => num(Scalar::lit(i.base10_parse::<f64>()?)),
                Lit::Bool(b) => Ok(Value::Scalar(Scalar::Bool(b.value), Ty::Bool)),
                other => Err(Error::new(other.span(), "only numeric and boolean literals are supported")),
            },
            Expr::Path(p) => {
                if let Some(ident) = p.path.get_ident() {
                    return self.lookup(ident);
                }
                let text: Vec<String> = p.path.segments.iter().map(|s| s.ident.to_string()).collect();
                let text: Vec<&str> = text.iter().map(String::as_str).collect();
                // `std::f32::INFINITY` is Rust's older spelling of `f32::INFINITY`.
                let path = match text[..] {
                    ["std" | "core", ref rest @ ..] => rest,
                    ref all => all,
                };
                let value = match path {
                    ["f32" | "f64", "INFINITY"] => f64::INFINITY,
                    ["f32" | "f64", "NEG_INFINITY"] => f64::NEG_INFINITY,
                    ["f32" | "f64", "NAN"] => f64::NAN,
                    ["f32", "MAX"] => f64::from(f32::MAX),
                    ["f32", "MIN"] => f64::from(f32::MIN),
                    ["f32", "MIN_POSITIVE"] => f64::from(f32::MIN_POSITIVE),
                    ["f32", "EPSILON"] => f64::from(f32::EPSILON),
                    ["f64", "MAX"] => f64::MAX,
                    ["f64", "MIN"] => f64::MIN,
                    ["f64", "MIN_POSITIVE"] => f64::MIN_POSITIVE,
                    ["f64", "EPSILON"] => f64::EPSILON,
                    [.., "consts", "PI"] => std::f64::consts::PI,
                    [.., "consts", "E"] => std::f64::consts::E,
                    _ => return Err(Error::new(p.span(), "unsupported path: only names in scope, the constants INFINITY, NEG_INFINITY, NAN, MAX, MIN, MIN_POSITIVE and EPSILON of f32 and f64, consts::PI and consts::E")),
                };
                num(Scalar::lit(value))
            }
            Expr::Unary(u) => match u.op {
                syn::UnOp::Neg(_) => num(Scalar::Unary(UnOp::Neg, Box::new(self.number(&u.expr)?))),
                syn::UnOp::Not(_) => Ok(Value::Scalar(Scalar::Unary(UnOp::Not, Box::new(self.boolean(&u.expr)?)), Ty::Bool)),
                _ => Err(Error::new(u.span(), "dereference is not supported")),
            },
            Expr::Binary(b) => self.binary(b),
            Expr::If(i) => self.if_expr(i),
            Expr::Block(b) if b.label.is_none() => self.block_value(&b.block),
            Expr::Cast(c) => match strip_type(&c.ty).as_deref() {
                Some("f32" | "f64") => self.expr(&c.expr),
                _ => Err(Error::new(c.ty.span(), "only `as f32` / `as f64` casts are supported (they do nothing: scalars have the accumulator type)")),
            },
            Expr::MethodCall(m) => self.method(m),
            Expr::Call(c) => self.call(c),
            other => Err(unsupported(other)),
        }
    }

    fn block_value(&mut self, block: &Block) -> Result<Value, Error> {
        match &block.stmts[..] {
            [Stmt::Expr(e, None)] => self.expr(e),
            _ => Err(Error::new(block.span(), "a block inside an expression must be a single value, e.g. `{ x }`: a `let` inside a closure or a branch is not supported; write the expression inline (`g.map(|x| x * x + 1.0)`, repeating a sub-expression if need be), and bind column-wide values (`let m = g.median();`) at the top of the function")),
        }
    }

    fn binary(&mut self, b: &syn::ExprBinary) -> Result<Value, Error> {
        use syn::BinOp as B;
        let op = match b.op {
            B::Add(_) => BinOp::Add,
            B::Sub(_) => BinOp::Sub,
            B::Mul(_) => BinOp::Mul,
            B::Div(_) => BinOp::Div,
            B::Lt(_) => BinOp::Lt,
            B::Le(_) => BinOp::Le,
            B::Gt(_) => BinOp::Gt,
            B::Ge(_) => BinOp::Ge,
            B::Eq(_) => BinOp::Eq,
            B::Ne(_) => BinOp::Ne,
            B::And(_) => BinOp::And,
            B::Or(_) => BinOp::Or,
            _ if compound_assignment(&b.op) => {
                return Err(Error::new(b.span(), COMPOUND_ASSIGNMENT))
            }
            _ => {
                return Err(Error::new(
                    b.op.span(),
                    "unsupported operator: use + - * / comparisons && || !",
                ))
            }
        };
        if op == BinOp::Div && self.integer_literals(&b.left) && self.integer_literals(&b.right) {
            return Err(Error::new(b.op.span(), "`/` between integer literals (or `let` names bound to them): Rust divides integers (`7 / 2` is 3), but a reduction's scalars are floats (3.5); write float literals, e.g. `7.0 / 2.0` or `let n = 7.0;`"));
        }
        let (l, r, ty) = if matches!(op, BinOp::And | BinOp::Or) {
            (self.boolean(&b.left)?, self.boolean(&b.right)?, Ty::Bool)
        } else {
            match (op, self.expr(&b.left)?, self.expr(&b.right)?) {
                // Booleans compare as in Rust: `(x > 0.0) == (y > 0.0)`.
                (BinOp::Eq | BinOp::Ne, Value::Scalar(l, Ty::Bool), Value::Scalar(r, Ty::Bool)) => {
                    (l, r, Ty::Bool)
                }
                (_, l, r) => {
                    let ty = if op.is_boolean() { Ty::Bool } else { Ty::Num };
                    (as_number(l, &b.left)?, as_number(r, &b.right)?, ty)
                }
            }
        };
        Ok(Value::Scalar(l.bin(op, r), ty))
    }

    fn if_expr(&mut self, i: &syn::ExprIf) -> Result<Value, Error> {
        let cond = self.boolean(&i.cond)?;
        let Some((_, otherwise)) = &i.else_branch else {
            return Err(Error::new(
                i.span(),
                "`if` needs an `else` branch: it is an expression with a value in both cases",
            ));
        };
        let a = self.block_value(&i.then_branch)?;
        let b = self.expr(otherwise)?;
        match (a, b) {
            (Value::Scalar(a, ta), Value::Scalar(b, tb)) if ta == tb => {
                Ok(Value::Scalar(Scalar::select(cond, a, b), ta))
            }
            _ => Err(Error::new(
                i.span(),
                "both branches of `if` must be scalars of the same type",
            )),
        }
    }

    fn call(&mut self, c: &syn::ExprCall) -> Result<Value, Error> {
        let Expr::Path(p) = &*c.func else {
            return Err(Error::new(c.func.span(), FUNCTIONS));
        };
        let name = p
            .path
            .segments
            .last()
            .map(|s| s.ident.to_string())
            .unwrap_or_default();
        let func = match name.as_str() {
            "normal_pdf" => Func::NormalPdf,
            "normal_kernel" => Func::NormalKernel,
            _ => {
                return Err(Error::new(
                    c.func.span(),
                    format!("unknown function `{name}`: {FUNCTIONS}"),
                ))
            }
        };
        if c.args.len() != 3 {
            return Err(Error::new(
                c.span(),
                format!("{name} takes three arguments: {name}(x, mu, sigma)"),
            ));
        }
        let args = c
            .args
            .iter()
            .map(|a| self.number(a))
            .collect::<Result<_, _>>()?;
        Ok(Value::Scalar(Scalar::Call(func, args), Ty::Num))
    }

    fn method(&mut self, m: &syn::ExprMethodCall) -> Result<Value, Error> {
        if m.turbofish.is_some() {
            return Err(Error::new(
                m.turbofish.span(),
                "turbofish (`::<>`) is not supported",
            ));
        }
        let mut receiver = self.expr(&m.receiver)?;
        let in_closure = self.env.iter().any(|e| {
            matches!(
                e,
                Entry::Bind {
                    closure_param: true,
                    ..
                }
            )
        });
        if in_closure && matches!(receiver, Value::Column { .. }) {
            // A column nested in a closure runs its own loop and cannot read the enclosing
            // closure's element: lower it again with those parameters hidden.
            self.env.push(Entry::Barrier);
            let checked = self.expr(&m.receiver);
            self.env.pop();
            receiver = checked?;
        }
        match receiver {
            Value::Column { lanes, keep } => self.column_method(m, lanes, keep),
            Value::Scalar(s, Ty::Num) => self.scalar_method(m, s),
            Value::Scalar(_, Ty::Bool) => Err(Error::new(
                m.method.span(),
                "methods cannot be called on booleans",
            )),
            Value::PerSample(_) => Err(Error::new(
                m.receiver.span(),
                "a `PerSample` input can only be used as `column.zip(input)`",
            )),
        }
    }

    fn args(&mut self, m: &syn::ExprMethodCall, allowed: &[usize]) -> Result<Vec<Scalar>, Error> {
        if !allowed.contains(&m.args.len()) {
            return Err(Error::new(
                m.method.span(),
                format!(
                    "`{}` takes {} argument(s), found {}",
                    m.method,
                    allowed
                        .iter()
                        .map(usize::to_string)
                        .collect::<Vec<_>>()
                        .join(" or "),
                    m.args.len()
                ),
            ));
        }
        m.args.iter().map(|a| self.number(a)).collect()
    }

    fn column_method(
        &mut self,
        m: &syn::ExprMethodCall,
        lanes: Vec<Scalar>,
        keep: Option<Scalar>,
    ) -> Result<Value, Error> {
        let method = m.method.to_string();
        let num = |s| Ok(Value::Scalar(s, Ty::Num));
        let column = || single_lane(&m.receiver, lanes.clone(), keep.clone());
        match method.as_str() {
            "map" | "filter" => {
                let [arg] = &m.args.iter().collect::<Vec<_>>()[..] else {
                    return Err(Error::new(
                        m.method.span(),
                        format!("`{method}` takes one closure"),
                    ));
                };
                let Expr::Closure(closure) = strip(arg) else {
                    return Err(Error::new(
                        arg.span(),
                        format!("`{method}` takes a closure, e.g. `|x| x * 2.0`"),
                    ));
                };
                if closure.inputs.len() != lanes.len() {
                    // `|(x, s)|`, the iterator habit after `zip`: the values are separate parameters.
                    let tuple = matches!(&closure.inputs.iter().collect::<Vec<_>>()[..], [Pat::Tuple(t)] if t.elems.len() == lanes.len());
                    let hint = if tuple {
                        ", not one tuple: write `|x, s|` for `|(x, s)|`"
                    } else {
                        ""
                    };
                    return Err(Error::new(closure.span(), format!("this column has {} value(s) per sample, so the closure takes {} parameter(s){hint}", lanes.len(), lanes.len())));
                }
                let mark = self.env.len();
                for (p, lane) in closure.inputs.iter().zip(&lanes) {
                    match p {
                        Pat::Ident(pi) if pi.mutability.is_none() => self.bind(
                            pi.ident.unraw().to_string(),
                            Value::Scalar(lane.clone(), Ty::Num),
                            true,
                        ),
                        Pat::Type(pt) => match &*pt.pat {
                            Pat::Ident(_) if integer_type(&pt.ty) => {
                                return Err(Error::new(
                                    pt.ty.span(),
                                    "a column's values are floats (the accumulator type): annotate the parameter `f32` or `f64`, or leave the type out",
                                ))
                            }
                            Pat::Ident(pi) => self.bind(
                                pi.ident.unraw().to_string(),
                                Value::Scalar(lane.clone(), Ty::Num),
                                true,
                            ),
                            other => {
                                return Err(Error::new(
                                    other.span(),
                                    "closure parameters must be plain names",
                                ))
                            }
                        },
                        Pat::Wild(_) => {}
                        other => {
                            return Err(Error::new(
                                other.span(),
                                "closure parameters must be plain names",
                            ))
                        }
                    }
                }
                let result = if method == "map" {
                    self.number(&closure.body)
                } else {
                    self.boolean(&closure.body)
                };
                self.env.truncate(mark);
                let body = result?;
                Ok(if method == "map" {
                    Value::Column {
                        lanes: vec![body],
                        keep,
                    }
                } else {
                    let filtered = Column {
                        value: Scalar::lit(0.0),
                        keep,
                    }
                    .filtered(body);
                    Value::Column {
                        lanes,
                        keep: filtered.keep,
                    }
                })
            }
            "zip" => {
                let [arg] = &m.args.iter().collect::<Vec<_>>()[..] else {
                    return Err(Error::new(
                        m.method.span(),
                        "`zip` takes one `PerSample` input",
                    ));
                };
                match self.expr(arg)? {
                    Value::PerSample(i) => {
                        let mut lanes = lanes;
                        lanes.push(Scalar::LoadPerSample(i));
                        Ok(Value::Column { lanes, keep })
                    }
                    _ => Err(Error::new(
                        arg.span(),
                        "`zip` takes a `PerSample` parameter of the function",
                    )),
                }
            }
            "with_rank" => {
                self.args(m, &[0])?;
                let c = column()?;
                if c.value_and_keep().any(uses_rank) {
                    return Err(Error::new(
                        m.method.span(),
                        "`with_rank` of a column whose values or filter already use ranks is not \
                         supported: rank the column before the first `with_rank`'s filter or map",
                    ));
                }
                let rank = Scalar::Rank(Box::new(c.clone()));
                Ok(Value::Column {
                    lanes: vec![c.value, rank],
                    keep: c.keep,
                })
            }
            "sign" => {
                self.args(m, &[0])?;
                let c = column()?;
                Ok(Value::Column {
                    lanes: vec![Scalar::Call(Func::Sign, vec![c.value])],
                    keep: c.keep,
                })
            }
            "sum" => {
                self.args(m, &[0])?;
                num(stats::sum(column()?))
            }
            "count" => {
                self.args(m, &[0])?;
                num(stats::count(column()?))
            }
            "mean" => {
                self.args(m, &[0])?;
                num(stats::mean(column()?))
            }
            "min" => {
                self.args(m, &[0])?;
                num(stats::min(column()?))
            }
            "max" => {
                self.args(m, &[0])?;
                num(stats::max(column()?))
            }
            "median" => {
                self.args(m, &[0])?;
                num(stats::median(column()?))
            }
            "median_low" => {
                self.args(m, &[0])?;
                num(stats::median_low(column()?))
            }
            "var" | "std" => {
                let correction = self
                    .args(m, &[0, 1])?
                    .pop()
                    .unwrap_or_else(|| Scalar::lit(1.0));
                num(if method == "var" {
                    stats::var(column()?, correction)
                } else {
                    stats::std(column()?, correction)
                })
            }
            "quantile" | "kth" => {
                let [q] = <[Scalar; 1]>::try_from(self.args(m, &[1])?)
                    .map_err(|_| Error::new(m.method.span(), "one argument"))?;
                if q.reads_element() || uses_rank(&q) {
                    return Err(Error::new(
                        m.args.span(),
                        format!(
                            "`{method}`'s argument is computed once for the column, before its \
                             loop: it cannot read the column's element or its rank (a closure's \
                             parameter); use parameters, literals and other reductions"
                        ),
                    ));
                }
                num(if method == "quantile" {
                    stats::quantile(column()?, q)
                } else {
                    stats::kth(column()?, q)
                })
            }
            _ => Err(Error::new(
                m.method.span(),
                format!("unsupported column method `{method}`; {COLUMN_METHODS}"),
            )),
        }
    }

    fn scalar_method(&mut self, m: &syn::ExprMethodCall, x: Scalar) -> Result<Value, Error> {
        let method = m.method.to_string();
        let call = |f: Func, mut args: Vec<Scalar>| {
            args.insert(0, x.clone());
            Ok(Value::Scalar(
                Scalar::Call(f, args),
                if f.is_boolean() { Ty::Bool } else { Ty::Num },
            ))
        };
        let f =
            match method.as_str() {
                "abs" => Func::Abs,
                "sqrt" => Func::Sqrt,
                "exp" => Func::Exp,
                "ln" => Func::Ln,
                "floor" => Func::Floor,
                "sign" => Func::Sign,
                "signum" => return Err(Error::new(
                    m.method.span(),
                    "`signum` is not supported, because it would not mean Rust's: Rust's gives \
                     +1 and -1 for +0 and -0, psg's `sign()` gives 0 (signSGD's convention); \
                     write `x.sign()`",
                )),
                "is_nan" => Func::IsNan,
                "is_finite" => Func::IsFinite,
                "min" => Func::Min,
                "max" => Func::Max,
                "clamp" => Func::Clamp,
                "powi" => {
                    let [arg] = &m.args.iter().collect::<Vec<_>>()[..] else {
                        return Err(Error::new(
                            m.method.span(),
                            "`powi` takes one integer literal",
                        ));
                    };
                    let n = match strip(arg) {
                        Expr::Lit(syn::ExprLit {
                            lit: Lit::Int(i), ..
                        }) => powi_exponent(i)?,
                        Expr::Unary(syn::ExprUnary {
                            op: syn::UnOp::Neg(_),
                            expr,
                            ..
                        }) => match strip(expr) {
                            Expr::Lit(syn::ExprLit {
                                lit: Lit::Int(i), ..
                            }) => -powi_exponent(i)?,
                            other => {
                                return Err(Error::new(
                                    other.span(),
                                    "`powi` takes an integer literal such as `powi(2)`",
                                ))
                            }
                        },
                        other => {
                            return Err(Error::new(
                                other.span(),
                                "`powi` takes an integer literal such as `powi(2)`",
                            ))
                        }
                    };
                    return call(Func::Powi(n), Vec::new());
                }
                _ => {
                    return Err(Error::new(
                        m.method.span(),
                        format!("unsupported scalar method `{method}`; {SCALAR_METHODS}"),
                    ))
                }
            };
        let args = self.args(m, &[f.arity() - 1])?;
        call(f, args)
    }
}

fn strip_type(ty: &syn::Type) -> Option<String> {
    match ty {
        syn::Type::Path(p) => p.path.get_ident().map(ToString::to_string),
        _ => None,
    }
}

/// Whether the expression reads a rank outside nested reductions.
fn uses_rank(e: &Scalar) -> bool {
    matches!(e, Scalar::Rank(_)) || e.children().into_iter().any(uses_rank)
}

/// Whether the tokens hold the keyword `return`, at any depth.
fn mentions_return(tokens: proc_macro2::TokenStream) -> bool {
    tokens.into_iter().any(|t| match t {
        proc_macro2::TokenTree::Ident(i) => i == "return",
        proc_macro2::TokenTree::Group(g) => mentions_return(g.stream()),
        _ => false,
    })
}

fn unsupported(e: &Expr) -> Error {
    let what = match e {
        Expr::ForLoop(_) | Expr::While(_) | Expr::Loop(_) => "loops are not supported: a batch reduction is a function of one column; use column methods (map, filter, sum, ...) instead of iterating",
        Expr::Assign(_) => "assignment is not supported: a batch reduction has no mutable state; bind a new name with `let`",
        Expr::Return(_) => "`return` is not supported: end the body with the value",
        Expr::Macro(_) => "macros are not supported inside a batch reduction",
        Expr::Closure(_) => "closures are allowed only as the argument of `map` or `filter`",
        Expr::Index(_) => "indexing is not supported: a reduction sees one column at a time; use column methods",
        Expr::Tuple(_) => "tuples are allowed only as the returned value or in `let (a, b) = (x, y)`",
        Expr::Match(_) => "`match` is not supported: use `if ... else ...`",
        Expr::Field(_) => "a field access: values have no fields; a method needs parentheses, e.g. `x.abs()`",
        _ => "unsupported expression in a batch reduction: use numbers, parameters, `let` names, arithmetic, comparisons, `if`/`else`, normal_pdf(..), normal_kernel(..), column methods and scalar methods",
    };
    let at = match e {
        Expr::Field(f) => f.member.span(),
        _ => e.span(),
    };
    Error::new(at, what)
}

/// A `let`'s name as the generated code spells it: the user's, without `r#`, every character
/// that is not ASCII alphanumeric as `_` (Rust allows `σ`; the generated C and Rust are kept
/// ASCII). Only for readability: generated locals are numbered.
fn generated_name(ident: &syn::Ident) -> String {
    ident
        .unraw()
        .to_string()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// The scalar of `v`, lowered from `e`, which must be a number; else an error saying what it is.
fn as_number(v: Value, e: &Expr) -> Result<Scalar, Error> {
    match v {
        Value::Scalar(s, Ty::Num) => Ok(s),
        Value::Scalar(_, Ty::Bool) => Err(Error::new(e.span(), "expected a number, found a boolean (a comparison or logic); write `if cond { 1.0 } else { 0.0 }` for a number")),
        Value::Column { .. } => Err(Error::new(e.span(), format!("expected a scalar, found a column: reduce it first ({COLUMN_METHODS})"))),
        Value::PerSample(_) => Err(Error::new(e.span(), "a `PerSample` input can only be used as `column.zip(input)`")),
    }
}

/// Whether `ty` is one of Rust's integer types, or a tuple (or parenthesized type) holding one.
fn integer_type(ty: &syn::Type) -> bool {
    const INTEGERS: [&str; 12] = [
        "i8", "i16", "i32", "i64", "i128", "isize", "u8", "u16", "u32", "u64", "u128", "usize",
    ];
    match ty {
        syn::Type::Path(t) => t.qself.is_none() && INTEGERS.iter().any(|i| t.path.is_ident(i)),
        syn::Type::Tuple(t) => t.elems.iter().any(integer_type),
        syn::Type::Paren(t) => integer_type(&t.elem),
        syn::Type::Group(t) => integer_type(&t.elem),
        _ => false,
    }
}

/// Refuses a `let` annotated with an integer type: psg's scalars are floats, so `let a: i32 = 7;`
/// then `a / 2` would give 3.5 where Rust gives 3.
fn refuse_integer_type(ty: &syn::Type) -> Result<(), Error> {
    if integer_type(ty) {
        return Err(Error::new(
            ty.span(),
            "psg computes every number as a float (the accumulator type): annotate `f32` or `f64`, or leave the type out (an integer literal such as `7` is then a float, and `/` between integers is refused)",
        ));
    }
    Ok(())
}

/// `powi`'s exponent literal: an `i32` magnitude of at most `i32::MAX` (so that its negation is
/// one too; `i32::MIN` is refused, which Rust accepts).
fn powi_exponent(i: &syn::LitInt) -> Result<i32, Error> {
    i.base10_parse::<i32>().map_err(|_| {
        Error::new(
            i.span(),
            format!(
                "`powi` takes an i32 exponent from -{max} to {max}; `{}` is out of that range",
                i.base10_digits(),
                max = i32::MAX
            ),
        )
    })
}
