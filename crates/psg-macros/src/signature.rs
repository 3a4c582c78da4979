//! The signature of a `#[batch_reduce]` function: one `Batch`, any number of `PerSample`
//! vectors and scalar parameters (`f32` or `f64`); returns a scalar, a tuple of scalars, or a
//! `Batch`.

use syn::{spanned::Spanned, Error, FnArg, Ident, ItemFn, Pat, ReturnType, Type};

/// The kind of one parameter.
#[derive(Clone, Debug)]
pub enum ParamKind {
    /// The column input `g: Batch`.
    Batch,
    /// A length-B vector, broadcast over columns: `PerSample`.
    PerSample(usize),
    /// A scalar parameter, the i-th; `f64` records whether the user wrote `f64`.
    Scalar(usize, bool),
}

/// One parameter.
#[derive(Clone, Debug)]
pub struct Param {
    pub name: Ident,
    pub kind: ParamKind,
}

/// What the function returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Returns {
    /// `n` scalars per column (`f32`, or a tuple of `n`).
    Scalars(usize),
    /// A `Batch`.
    Batch,
}

/// The checked signature.
pub struct Signature {
    pub params: Vec<Param>,
    pub returns: Returns,
}

const PARAM_HELP: &str = "a batch reduction takes one `Batch` (the column), any number of \
    `PerSample` vectors (length B, broadcast over columns) and scalar parameters of type `f32` \
    or `f64`";
const RETURN_HELP: &str = "a batch reduction returns `f32` (one value per column), a tuple such \
    as `(f32, f32)`, or `Batch` (a per-sample tensor shaped like the input)";

/// The name of a plain type, by its last segment: `Batch`, `psg::Batch` and
/// `psg::prelude::Batch` are all `Batch`.
fn type_name(ty: &Type) -> Option<String> {
    match ty {
        Type::Path(p) if p.qself.is_none() => {
            let segs = &p.path.segments;
            let plain = segs.iter().all(|s| s.arguments.is_none());
            plain
                .then(|| segs.last().map(|s| s.ident.to_string()))
                .flatten()
        }
        _ => None,
    }
}

fn is_scalar_type(ty: &Type) -> Option<bool> {
    match type_name(ty).as_deref() {
        Some("f32") => Some(false),
        Some("f64") => Some(true),
        _ => None,
    }
}

/// Checks the function's signature.
/// A parameter of a type the macro does not take, with a hint for a reference (`g: &Batch`,
/// `k: &f32`: the types are taken by value).
fn unsupported_type(name: &syn::Ident, ty: &syn::Type) -> Error {
    let by_value = match ty {
        syn::Type::Reference(r) => format!(
            " (take it by value: `{name}: {}`)",
            quote::ToTokens::to_token_stream(&r.elem)
        ),
        _ => String::new(),
    };
    Error::new(
        ty.span(),
        format!("parameter `{name}` has an unsupported type{by_value}: {PARAM_HELP}"),
    )
}

pub fn parse(f: &ItemFn) -> Result<Signature, Error> {
    let sig = &f.sig;
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        return Err(Error::new(
            sig.generics.span(),
            "a batch reduction cannot be generic: one definition already serves f32, f64, f16 and bf16 input",
        ));
    }
    if let Some(t) = &sig.asyncness {
        return Err(Error::new(t.span(), "a batch reduction cannot be `async`"));
    }
    if let Some(t) = &sig.unsafety {
        return Err(Error::new(t.span(), "a batch reduction cannot be `unsafe`"));
    }
    if let Some(v) = &sig.variadic {
        return Err(Error::new(v.span(), "a batch reduction cannot be variadic"));
    }

    let mut params = Vec::new();
    let (mut n_batch, mut n_ps, mut n_scalar) = (0, 0, 0);
    for arg in &sig.inputs {
        let FnArg::Typed(pt) = arg else {
            return Err(Error::new(
                arg.span(),
                "a batch reduction is a free function: remove `self`",
            ));
        };
        let name = match &*pt.pat {
            Pat::Ident(pi) if pi.by_ref.is_none() && pi.subpat.is_none() => {
                if let Some(m) = &pi.mutability {
                    return Err(Error::new(
                        m.span(),
                        "parameters of a batch reduction cannot be `mut`: the GPU kernel has no mutable state",
                    ));
                }
                pi.ident.clone()
            }
            other => {
                return Err(Error::new(
                    other.span(),
                    "parameters must be plain names, such as `g: Batch`",
                ))
            }
        };
        let kind = match type_name(&pt.ty).as_deref() {
            Some("Batch") => {
                n_batch += 1;
                if n_batch > 1 {
                    return Err(Error::new(
                        pt.span(),
                        format!("a second `Batch` parameter `{name}`: {PARAM_HELP}; pass other per-sample data as `PerSample`"),
                    ));
                }
                ParamKind::Batch
            }
            Some("PerSample") => {
                n_ps += 1;
                ParamKind::PerSample(n_ps - 1)
            }
            _ => match is_scalar_type(&pt.ty) {
                Some(is_f64) => {
                    n_scalar += 1;
                    ParamKind::Scalar(n_scalar - 1, is_f64)
                }
                None => return Err(unsupported_type(&name, &pt.ty)),
            },
        };
        params.push(Param { name, kind });
    }
    if n_batch == 0 {
        return Err(Error::new(
            sig.paren_token.span.join(),
            format!(
                "missing the `Batch` input: {PARAM_HELP}, e.g. `fn {}(g: Batch) -> f32`",
                sig.ident
            ),
        ));
    }

    let returns = match &sig.output {
        ReturnType::Default => {
            return Err(Error::new(
                sig.ident.span(),
                format!("missing return type: {RETURN_HELP}"),
            ))
        }
        ReturnType::Type(_, ty) => match &**ty {
            Type::Tuple(t) if t.elems.len() == 1 => {
                return Err(Error::new(
                    t.span(),
                    "a one-element tuple: for one value per column return `f32` (and end with the value, not `(value,)`)",
                ))
            }
            Type::Tuple(t) if !t.elems.is_empty() => {
                for e in &t.elems {
                    if is_scalar_type(e).is_none() {
                        return Err(Error::new(
                            e.span(),
                            format!("unsupported tuple element: {RETURN_HELP}"),
                        ));
                    }
                }
                Returns::Scalars(t.elems.len())
            }
            ty if is_scalar_type(ty).is_some() => Returns::Scalars(1),
            ty if type_name(ty).as_deref() == Some("Batch") => Returns::Batch,
            ty => {
                return Err(Error::new(
                    ty.span(),
                    format!("unsupported return type: {RETURN_HELP}"),
                ))
            }
        },
    };
    Ok(Signature { params, returns })
}
