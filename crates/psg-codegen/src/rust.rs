//! The Rust emitter: the CPU implementation of a reduction, as source text the macro splices into
//! the user's crate. It walks the same [`Plan`] as the CUDA emitter with the same scalar helper
//! definitions, so both backends compute the same values in the same order (selection uses a
//! sort-free `select_nth_unstable_by` on IEEE total order, which is exact and so bit-equal to the
//! GPU's radix select).
//!
//! The text defines two modules, `acc32` (for f32, f16 and bf16 input) and `acc64` (f64), each with
//! `pub fn column<T: Element<Acc = Acc>>(col: &Column<'_, T>, out: &mut [Acc])`, the function the
//! runtime's CPU backend calls once per column.

use std::fmt::Write;

use crate::expr::{element_reads, finite_literal, names, print, rank_columns, Acc, Scope, Syntax};
use crate::ir::{Column, Func, Output, ReduceOp, Scalar};
use crate::schedule::{Plan, Step};

struct Rust {
    acc: Acc,
}

impl Syntax for Rust {
    fn acc(&self) -> Acc {
        self.acc
    }

    fn literal(&self, value: f64) -> String {
        match finite_literal(value, self.acc) {
            Some(text) if self.acc == Acc::F32 => format!("{text}_f32"),
            Some(text) => format!("{text}_f64"),
            None if value.is_nan() => "psg_nan()".into(),
            None if value > 0.0 => "psg_inf()".into(),
            None => "(-psg_inf())".into(),
        }
    }

    fn select(&self, cond: &str, then: &str, otherwise: &str) -> String {
        format!("(if {cond} {{ {then} }} else {{ {otherwise} }})")
    }

    fn call(&self, f: Func, args: &str) -> String {
        match f {
            // Decided by the element type `T` of the column function.
            Func::CorrectedSquares => format!("{}::<T>({args})", f.helper()),
            _ => format!("{}({args})", f.helper()),
        }
    }
}

/// Emits the CPU modules `acc32` and `acc64`; `runtime` is the path of the psg runtime crate in
/// the user's crate (e.g. `::psg::runtime`).
pub fn emit(plan: &Plan, runtime: &str) -> String {
    let mut s = String::new();
    for (module, acc) in [("acc32", Acc::F32), ("acc64", Acc::F64)] {
        let width = match acc {
            Acc::F32 => "f32 (for f32, f16 and bf16 data)",
            Acc::F64 => "f64 (for f64 data)",
        };
        // Every public item carries a doc comment, so that a user's crate with
        // `#![deny(missing_docs)]` can hold a `pub` reduction.
        writeln!(
            s,
            "/// The CPU implementation of `{}`, accumulating in {width}.\npub mod {module} {{",
            plan.name
        )
        .ok();
        s.push_str("#![allow(unused, clippy::all, clippy::pedantic, clippy::nursery)]\n");
        s.push_str("/// The accumulator type of this module.\n");
        match acc {
            Acc::F32 => s.push_str("pub type Acc = f32;\ntype Key = u32;\n"),
            Acc::F64 => s.push_str("pub type Acc = f64;\ntype Key = u64;\n"),
        }
        s.push_str(include_str!("rust_prelude.rs.txt"));
        emit_column_fn(&mut s, plan, &Rust { acc }, runtime);
        s.push_str("}\n");
    }
    s
}

fn emit_column_fn(s: &mut String, plan: &Plan, syntax: &Rust, rt: &str) {
    let locals: Vec<String> = plan.lets.iter().map(|l| l.name.clone()).collect();
    let scope = Scope {
        locals: &locals,
        ranks: &plan.ranks,
        suffix: "",
    };
    let e = |expr: &Scalar| print(expr, syntax, &scope);
    writeln!(
        s,
        "/// The CPU implementation of `{}` for one column.\n\
         pub fn column<T: {rt}::Element<Acc = Acc>>(col: &{rt}::Column<'_, T>, out: &mut [Acc]) {{",
        plan.name
    )
    .ok();
    s.push_str("    let n_b = col.len();\n");
    writeln!(s, "    let {}: Acc = n_b as Acc;", names::BATCH).ok();
    for (i, name) in plan.scalars.iter().enumerate() {
        writeln!(
            s,
            "    let {}: Acc = col.scalar({i}); // `{name}`",
            names::scalar(i)
        )
        .ok();
    }
    for step in &plan.steps {
        match step {
            Step::Let(i) => {
                let l = &plan.lets[*i];
                writeln!(
                    s,
                    "    let {} = {};",
                    names::local(*i, &l.name),
                    e(&l.value)
                )
                .ok();
            }
            Step::Loop(temps) => {
                for &t in temps {
                    let name = names::temp(t);
                    let zero = syntax.literal(0.0);
                    match plan.temps[t].reduce.op {
                        ReduceOp::Sum => {
                            writeln!(s, "    let mut {name}_p: [Acc; 8] = [{zero}; 8];")
                        }
                        ReduceOp::Min | ReduceOp::Max => writeln!(
                            s,
                            "    let mut {name}: Acc = psg_nan(); let mut {name}_any = false;"
                        ),
                        ReduceOp::MinTotal => {
                            writeln!(s, "    let mut {name}: Acc = psg_total_none();")
                        }
                        _ => writeln!(s, "    let mut {name}: Acc = {zero};"),
                    }
                    .ok();
                }
                // Canonical order: sample b goes to partial b % 8, as on the GPU.
                s.push_str("    for b in 0..n_b {\n");
                let columns = temps.iter().map(|&t| &plan.temps[t].reduce.column);
                loop_header(s, "        ", columns, &e, &plan.ranks);
                for &t in temps {
                    let r = &plan.temps[t].reduce;
                    let name = names::temp(t);
                    let value = e(&r.column.value);
                    let update = match r.op {
                        ReduceOp::Sum => format!("{name}_p[b & 7] += {value};"),
                        ReduceOp::Count => format!("{name} += {};", syntax.literal(1.0)),
                        ReduceOp::Min | ReduceOp::Max => {
                            let f = if r.op == ReduceOp::Min {
                                "psg_min"
                            } else {
                                "psg_max"
                            };
                            format!(
                                "let v: Acc = {value}; {name} = if {name}_any {{ {f}({name}, v) }} else {{ v }}; {name}_any = true;"
                            )
                        }
                        ReduceOp::MinTotal => format!("{name} = psg_total_min({name}, {value});"),
                        ReduceOp::Kth(_) => unreachable!("selection is not a streaming reduction"),
                    };
                    match &r.column.keep {
                        Some(k) => writeln!(s, "        if {} {{ {update} }}", e(k)),
                        None => writeln!(s, "        {{ {update} }}"),
                    }
                    .ok();
                }
                s.push_str("    }\n");
                for &t in temps {
                    if plan.temps[t].reduce.op == ReduceOp::Sum {
                        let name = names::temp(t);
                        let terms: Vec<String> = (0..crate::SUM_PARTIALS)
                            .map(|r| format!("{name}_p[{r}]"))
                            .collect();
                        writeln!(s, "    let {name}: Acc = {};", terms.join(" + ")).ok();
                    }
                }
            }
            Step::Select(t) => {
                let r = &plan.temps[*t].reduce;
                let ReduceOp::Kth(k) = &r.op else {
                    unreachable!("only selection temporaries get a Select step")
                };
                let keep = r
                    .column
                    .keep
                    .as_ref()
                    .map(&e)
                    .unwrap_or_else(|| "true".into());
                writeln!(s, "    let {}: Acc = {{", names::temp(*t)).ok();
                writeln!(s, "        let k = psg_index({});", e(k)).ok();
                s.push_str("        let mut kept: Vec<Acc> = Vec::with_capacity(n_b);\n");
                s.push_str("        for b in 0..n_b {\n");
                loop_header(s, "            ", [&r.column], &e, &plan.ranks);
                writeln!(
                    s,
                    "            if {keep} {{ kept.push({}); }}",
                    e(&r.column.value)
                )
                .ok();
                s.push_str("        }\n");
                s.push_str("        psg_select(&mut kept, k)\n    };\n");
            }
        }
    }
    match &plan.output {
        Output::Scalars(values) => {
            for (i, v) in values.iter().enumerate() {
                writeln!(s, "    out[{i}] = {};", e(v)).ok();
            }
        }
        Output::Batch(column) => {
            s.push_str("    for b in 0..n_b {\n");
            loop_header(s, "        ", [column], &e, &plan.ranks);
            let value = e(&column.value);
            let value = match &column.keep {
                Some(k) => syntax.select(&e(k), &value, &syntax.literal(0.0)),
                None => value,
            };
            writeln!(s, "        out[b] = {value};\n    }}").ok();
        }
    }
    s.push_str("}\n");
}

/// The top of a loop body over `b`: declares the elements that the given columns read and
/// computes the ranks they use.
fn loop_header<'a>(
    s: &mut String,
    indent: &str,
    columns: impl IntoIterator<Item = &'a Column>,
    e: &dyn Fn(&Scalar) -> String,
    ranks: &[Column],
) {
    let exprs: Vec<&Scalar> = columns
        .into_iter()
        .flat_map(Column::value_and_keep)
        .collect();
    element_loads(s, indent, exprs.iter().copied(), "b");
    for column in rank_columns(exprs.iter().copied()) {
        let j = ranks.iter().position(|r| r == column).unwrap_or_default();
        let keep = column.keep.as_ref().map(e).unwrap_or_else(|| "true".into());
        writeln!(s, "{indent}let {}: Acc = {{", names::rank(j)).ok();
        writeln!(
            s,
            "{indent}    let self_key = psg_rank_key({});",
            e(&column.value)
        )
        .ok();
        writeln!(s, "{indent}    let mut r: u64 = 0;").ok();
        writeln!(s, "{indent}    for b2 in 0..n_b {{").ok();
        element_loads(
            s,
            &format!("{indent}        "),
            column.value_and_keep(),
            "b2",
        );
        writeln!(
            s,
            "{indent}        if {keep} {{ let k2 = psg_rank_key({}); if k2 < self_key || (k2 == self_key && b2 < b) {{ r += 1; }} }}",
            e(&column.value)
        )
        .ok();
        writeln!(s, "{indent}    }}\n{indent}    r as Acc\n{indent}}};").ok();
    }
}

/// Declares the elements at index `index` that the expressions read (inner loops shadow the
/// outer names).
fn element_loads<'a>(
    s: &mut String,
    indent: &str,
    exprs: impl IntoIterator<Item = &'a Scalar>,
    index: &str,
) {
    let (g, per_sample) = element_reads(exprs);
    if g {
        writeln!(
            s,
            "{indent}let {}: Acc = col.load({index});",
            names::ELEMENT
        )
        .ok();
    }
    for i in per_sample {
        writeln!(
            s,
            "{indent}let {}: Acc = col.per_sample({i}, {index});",
            names::per_sample_element(i)
        )
        .ok();
    }
}
