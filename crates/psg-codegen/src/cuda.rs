//! The CUDA C emitter: one self-contained kernel per input dtype, compiled by NVRTC with no
//! toolkit headers (f16 and bf16 travel as 16-bit integers and convert with one PTX instruction).
//!
//! Launch shape (`psg_runtime::LaunchShape::ThreadPerColumn`): one thread per column `p`, reading
//! `g[b * P + p]` for each pass, so a warp reads 32 consecutive elements of a row (coalesced).
//! Parameters, in order: `g`, the per-sample inputs, the outputs, `n_b` (B), `n_p` (P), the
//! scalar parameters (accumulator type).

use std::fmt::Write;

use crate::expr::{element_reads, finite_literal, names, print, rank_columns, Acc, Scope, Syntax};
use crate::ir::{BinOp, Column, Output, ReduceOp, Scalar};
use crate::schedule::{Plan, Step};
use crate::DType;

pub(crate) struct Cuda {
    pub(crate) acc: Acc,
    /// `&&` and `||` as `&` and `|` (cast back to `bool`): both sides are evaluated (they have
    /// no side effects), so a condition is predicates and no branch. For the filters of the
    /// tiled kernel's streaming passes: with `||`, NVRTC branched around each element of the
    /// MAD mean's last pass (`!(mad > 0) || !(d > k mad)`) and evaluated the condition twice.
    /// Not everywhere: in the MAD cleaner's large-B kernel it cost 16 bytes of local memory.
    pub(crate) eager: bool,
}

impl Syntax for Cuda {
    fn acc(&self) -> Acc {
        self.acc
    }

    fn literal(&self, value: f64) -> String {
        match finite_literal(value, self.acc) {
            Some(text) if self.acc == Acc::F32 => format!("{text}f"),
            Some(text) => text,
            None if value.is_nan() => "psg_nan()".into(),
            None if value > 0.0 => "psg_inf()".into(),
            None => "(-psg_inf())".into(),
        }
    }

    fn select(&self, cond: &str, then: &str, otherwise: &str) -> String {
        format!("psg_select({cond}, {then}, {otherwise})")
    }

    fn binary(&self, op: BinOp, a: &str, b: &str) -> String {
        match op {
            BinOp::And if self.eager => format!("((bool)({a} & {b}))"),
            BinOp::Or if self.eager => format!("((bool)({a} | {b}))"),
            _ => format!("({a} {} {b})", op.symbol()),
        }
    }
}

/// The kernel's name for a dtype: `{reduction}_{dtype}`.
pub fn kernel_name(plan: &Plan, dtype: DType) -> String {
    format!("{}_{}", plan.name, dtype.name())
}

/// How an emitter prints a plan's expressions for one input dtype: in its accumulator's syntax,
/// with the plan's lets and ranks in scope.
pub(crate) struct Printer<'a> {
    plan: &'a Plan,
    acc: Acc,
    locals: Vec<String>,
}

impl<'a> Printer<'a> {
    pub(crate) fn new(plan: &'a Plan, dtype: DType) -> Self {
        Printer {
            plan,
            acc: dtype.acc(),
            locals: plan.lets.iter().map(|l| l.name.clone()).collect(),
        }
    }

    /// The syntax, with short-circuits.
    pub(crate) fn syntax(&self) -> Cuda {
        Cuda {
            acc: self.acc,
            eager: false,
        }
    }

    /// The lets' names.
    pub(crate) fn locals(&self) -> &[String] {
        &self.locals
    }

    /// The scope of the plan's lets and ranks, their names followed by `suffix`.
    pub(crate) fn scope<'s>(&'s self, suffix: &'s str) -> Scope<'s> {
        Scope {
            locals: &self.locals,
            ranks: &self.plan.ranks,
            suffix,
        }
    }

    /// An expression.
    pub(crate) fn e(&self, expr: &Scalar) -> String {
        print(expr, &self.syntax(), &self.scope(""))
    }

    /// A streaming pass's filter, without short-circuits (see [`Cuda::eager`]).
    pub(crate) fn keep(&self, expr: &Scalar) -> String {
        let eager = Cuda {
            acc: self.acc,
            eager: true,
        };
        print(expr, &eager, &self.scope(""))
    }
}

/// Bins of a thread-per-column selection's pass: one for each value of a 4-bit digit.
const DIGIT_BINS: usize = 16;
/// The widest block whose threads have their own bins (shared memory: 16 KiB a block).
const DIGIT_THREADS: usize = 256;

/// Emits the CUDA C source of the kernel for one input dtype.
pub fn emit(plan: &Plan, dtype: DType) -> String {
    let printer = Printer::new(plan, dtype);
    let syntax = printer.syntax();
    let e = |expr: &Scalar| printer.e(expr);
    let mut s = String::new();
    s.push_str(&header(plan, dtype, "thread per column"));
    s.push_str(prelude(dtype));

    let params = kernel_params(plan);
    writeln!(
        s,
        "\nextern \"C\" __global__ void {}({}) {{",
        kernel_name(plan, dtype),
        params.join(", ")
    )
    .ok();
    if plan.steps.iter().any(|s| matches!(s, Step::Select(_))) {
        // A selection's counts of the keys' next digit, a column (thread) each (see `Select`).
        writeln!(
            s,
            "    __shared__ unsigned int psg_bins[{DIGIT_BINS} * {DIGIT_THREADS}];"
        )
        .ok();
    }
    s.push_str("    const long long p = (long long)blockIdx.x * blockDim.x + threadIdx.x;\n");
    s.push_str("    if (p >= n_p) return;\n");
    writeln!(s, "    const psg_acc {} = (psg_acc)n_b;", names::BATCH).ok();

    for step in &plan.steps {
        match step {
            Step::Let(i) => emit_let(&mut s, plan, *i, &e),
            Step::Loop(temps) => {
                for &t in temps {
                    writeln!(
                        s,
                        "    {}",
                        declare_partial(&plan.temps[t].reduce.op, t, &syntax)
                    )
                    .ok();
                }
                // Canonical order: sample b goes to partial b % 8 (see `crate::SUM_PARTIALS`).
                s.push_str("    for (long long b0 = 0; b0 < n_b; b0 += 8) {\n");
                s.push_str("        #pragma unroll\n        for (int r = 0; r < 8; ++r) {\n");
                s.push_str(
                    "            const long long b = b0 + r;\n            if (b >= n_b) break;\n",
                );
                let columns = temps.iter().map(|&t| &plan.temps[t].reduce.column);
                loop_header(&mut s, "            ", columns, &e, &plan.ranks);
                for &t in temps {
                    let r = &plan.temps[t].reduce;
                    let update = update_partial(&r.op, t, &e(&r.column.value), "r", &syntax);
                    match r.column.keep.as_ref().map(&e) {
                        Some(k) => writeln!(s, "            if ({k}) {{ {update} }}"),
                        None => writeln!(s, "            {update}"),
                    }
                    .ok();
                }
                s.push_str("        }\n    }\n");
                for &t in temps {
                    if let Some(line) = combine_partials(&plan.temps[t].reduce.op, t, |r| {
                        format!("{}_p[{r}]", names::temp(t))
                    }) {
                        writeln!(s, "    {line}").ok();
                    }
                }
            }
            Step::Select(t) => {
                let r = &plan.temps[*t].reduce;
                let ReduceOp::Kth(k) = &r.op else {
                    unreachable!("only selection temporaries get a Select step")
                };
                let name = names::temp(*t);
                let keep = r
                    .column
                    .keep
                    .as_ref()
                    .map(&e)
                    .unwrap_or_else(|| "true".into());
                let value = e(&r.column.value);
                let bits = match syntax.acc {
                    Acc::F32 => 32,
                    Acc::F64 => 64,
                };
                writeln!(s, "    psg_acc {name};\n    {{").ok();
                writeln!(s, "        const long long k = psg_index({});", e(k)).ok();
                s.push_str("        long long total = 0;\n");
                s.push_str("        for (long long b = 0; b < n_b; ++b) {\n");
                let keep_only = Column {
                    value: Scalar::lit(0.0),
                    keep: r.column.keep.clone(),
                };
                loop_header(&mut s, "            ", [&keep_only], &e, &plan.ranks);
                writeln!(s, "            if ({keep}) ++total;\n        }}").ok();
                writeln!(
                    s,
                    "        if (k < 0 || k >= total) {{ {name} = psg_nan(); }} else {{"
                )
                .ok();
                s.push_str("            psg_key prefix = 0; long long rem = k;\n");
                // The keys that match the prefix, counted by their next 4 bits in the thread's
                // 16 bins (shared memory, a column a thread: no barrier), a digit a pass: 8
                // passes over g for f32 keys instead of 32. Where the block is wider than the
                // bins, or B beyond 32-bit counts, a bit a pass.
                write!(
                    s,
                    r#"            if (blockDim.x <= {DIGIT_THREADS} && n_b <= 0xffffffffLL) {{
                unsigned int* const bins = psg_bins + threadIdx.x;
                for (int shift = {top}; shift >= 0; shift -= 4) {{
                    #pragma unroll
                    for (int d = 0; d < {DIGIT_BINS}; ++d) bins[d * {DIGIT_THREADS}] = 0u;
                    for (long long b = 0; b < n_b; ++b) {{
"#,
                    top = bits - 4
                )
                .ok();
                loop_header(
                    &mut s,
                    "                        ",
                    [&r.column],
                    &e,
                    &plan.ranks,
                );
                write!(
                    s,
                    r#"                        const psg_key key = psg_to_key({value});
                        if ({keep} && (key >> shift >> 4) == (prefix >> shift >> 4)) ++bins[(unsigned int)((key >> shift) & 15) * {DIGIT_THREADS}];
                    }}
                    unsigned int d = 0;
                    for (; d < {last}; ++d) {{
                        const unsigned int c = bins[d * {DIGIT_THREADS}];
                        if (rem < (long long)c) break;
                        rem -= c;
                    }}
                    prefix |= ((psg_key)d) << shift;
                }}
            }} else {{
"#,
                    last = DIGIT_BINS - 1
                )
                .ok();
                writeln!(
                    s,
                    "            for (int bit = {}; bit >= 0; --bit) {{",
                    bits - 1
                )
                .ok();
                s.push_str("                long long c = 0;\n");
                s.push_str("                for (long long b = 0; b < n_b; ++b) {\n");
                loop_header(&mut s, "                    ", [&r.column], &e, &plan.ranks);
                writeln!(
                    s,
                    "                    if ({keep} && (psg_to_key({value}) >> bit) == (prefix >> bit)) ++c;"
                )
                .ok();
                s.push_str("                }\n");
                s.push_str(
                    "                if (rem >= c) { rem -= c; prefix |= ((psg_key)1) << bit; }\n",
                );
                s.push_str("            }\n            }\n");
                writeln!(
                    s,
                    "            {name} = psg_from_key(prefix);\n        }}\n    }}"
                )
                .ok();
            }
        }
    }

    match &plan.output {
        Output::Scalars(values) => {
            for (i, v) in values.iter().enumerate() {
                writeln!(s, "    out{i}[p] = psg_store({});", e(v)).ok();
            }
        }
        Output::Batch(column) => {
            s.push_str("    for (long long b = 0; b < n_b; ++b) {\n");
            loop_header(&mut s, "        ", [column], &e, &plan.ranks);
            let value = e(&column.value);
            let value = match &column.keep {
                Some(k) => syntax.select(&e(k), &value, &syntax.literal(0.0)),
                None => value,
            };
            writeln!(s, "        out0[b * n_p + p] = psg_store({value});\n    }}").ok();
        }
    }
    s.push_str("}\n");
    s
}

/// Binds `lets[i]` (the same line in every kernel shape).
pub(crate) fn emit_let(s: &mut String, plan: &Plan, i: usize, e: &dyn Fn(&Scalar) -> String) {
    let l = &plan.lets[i];
    writeln!(
        s,
        "    const auto {} = {};",
        names::local(i, &l.name),
        e(&l.value)
    )
    .ok();
}

/// The parameters every kernel shape takes, in the runtime's order.
pub(crate) fn kernel_params(plan: &Plan) -> Vec<String> {
    let n_out = match &plan.output {
        Output::Scalars(v) => v.len(),
        Output::Batch(_) => 1,
    };
    let mut params = vec!["const psg_elem* __restrict__ g".to_string()];
    params.extend((0..plan.per_sample.len()).map(|i| format!("const psg_acc* __restrict__ ps{i}")));
    params.extend((0..n_out).map(|i| format!("psg_elem* __restrict__ out{i}")));
    params.push("long long n_b".into());
    params.push("long long n_p".into());
    params.extend((0..plan.scalars.len()).map(|i| format!("psg_acc {}", names::scalar(i))));
    params
}

/// The comment that opens every generated kernel.
pub(crate) fn header(plan: &Plan, dtype: DType, shape: &str) -> String {
    let mut s = format!(
        "// Generated by psg-codegen {}: reduction `{}`, input {}, {shape}.\n",
        crate::CODEGEN_VERSION,
        plan.name,
        dtype.name()
    );
    for (i, name) in plan.scalars.iter().enumerate() {
        s.push_str(&format!("// {} = parameter `{name}`\n", names::scalar(i)));
    }
    s
}

/// Declares a streaming reduction's accumulator: 8 partial sums for a sum (combined by
/// [`combine_partials`]), one accumulator otherwise.
pub(crate) fn declare_partial(op: &ReduceOp, t: usize, syntax: &dyn Syntax) -> String {
    let name = names::temp(t);
    let zero = syntax.literal(0.0);
    match op {
        ReduceOp::Sum => format!("psg_acc {name}_p[8] = {{{zero}, {zero}, {zero}, {zero}, {zero}, {zero}, {zero}, {zero}}};"),
        ReduceOp::Min | ReduceOp::Max => format!("psg_acc {name} = psg_nan(); bool {name}_any = false;"),
        ReduceOp::MinTotal => format!("psg_acc {name} = psg_total_none();"),
        _ => format!("psg_acc {name} = {zero};"),
    }
}

/// The update of a streaming reduction by element value `value`; `slot` indexes a sum's partial.
pub(crate) fn update_partial(
    op: &ReduceOp,
    t: usize,
    value: &str,
    slot: &str,
    syntax: &dyn Syntax,
) -> String {
    let name = names::temp(t);
    match op {
        ReduceOp::Sum => format!("{name}_p[{slot}] += {value};"),
        ReduceOp::Count => format!("{name} += {};", syntax.literal(1.0)),
        ReduceOp::Min | ReduceOp::Max => {
            let f = if *op == ReduceOp::Min {
                "psg_min"
            } else {
                "psg_max"
            };
            format!("{{ const psg_acc v = {value}; {name} = {name}_any ? {f}({name}, v) : v; {name}_any = true; }}")
        }
        ReduceOp::MinTotal => format!("{name} = psg_total_min({name}, {value});"),
        ReduceOp::Kth(_) => unreachable!("selection is not a streaming reduction"),
    }
}

/// `psg_acc t = ((p0 + p1) + p2) + ...` for a sum; `None` for the others.
pub(crate) fn combine_partials(
    op: &ReduceOp,
    t: usize,
    partial: impl Fn(usize) -> String,
) -> Option<String> {
    (*op == ReduceOp::Sum).then(|| {
        let terms: Vec<String> = (0..crate::SUM_PARTIALS).map(partial).collect();
        format!("const psg_acc {} = {};", names::temp(t), terms.join(" + "))
    })
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
    let global = |i: &str| format!("psg_load(g, {i} * n_p + p)");
    loop_header_with(s, indent, columns, e, ranks, &global);
}

/// [`loop_header`] with `load(index)` giving the expression of the column's element `index`.
pub(crate) fn loop_header_with<'a>(
    s: &mut String,
    indent: &str,
    columns: impl IntoIterator<Item = &'a Column>,
    e: &dyn Fn(&Scalar) -> String,
    ranks: &[Column],
    load: &dyn Fn(&str) -> String,
) {
    let exprs: Vec<&Scalar> = columns
        .into_iter()
        .flat_map(Column::value_and_keep)
        .collect();
    element_loads(s, indent, exprs.iter().copied(), "b", load);
    for column in rank_columns(exprs.iter().copied()) {
        let j = ranks.iter().position(|r| r == column).unwrap_or_default();
        let keep = column.keep.as_ref().map(e).unwrap_or_else(|| "true".into());
        let rank = names::rank(j);
        writeln!(s, "{indent}psg_acc {rank};\n{indent}{{").ok();
        writeln!(
            s,
            "{indent}    const psg_key self_key = psg_rank_key({});",
            e(&column.value)
        )
        .ok();
        writeln!(s, "{indent}    long long r = 0;").ok();
        writeln!(s, "{indent}    for (long long b2 = 0; b2 < n_b; ++b2) {{").ok();
        element_loads(
            s,
            &format!("{indent}        "),
            column.value_and_keep(),
            "b2",
            load,
        );
        writeln!(
            s,
            "{indent}        if ({keep}) {{ const psg_key k2 = psg_rank_key({}); if (k2 < self_key || (k2 == self_key && b2 < b)) ++r; }}",
            e(&column.value)
        )
        .ok();
        writeln!(
            s,
            "{indent}    }}\n{indent}    {rank} = (psg_acc)r;\n{indent}}}"
        )
        .ok();
    }
}

/// Declares the elements at index `index` that the expressions read (inner loops shadow the
/// outer names).
fn element_loads<'a>(
    s: &mut String,
    indent: &str,
    exprs: impl IntoIterator<Item = &'a Scalar>,
    index: &str,
    load: &dyn Fn(&str) -> String,
) {
    let (g, per_sample) = element_reads(exprs);
    if g {
        writeln!(
            s,
            "{indent}const psg_acc {} = {};",
            names::ELEMENT,
            load(index)
        )
        .ok();
    }
    for i in per_sample {
        writeln!(
            s,
            "{indent}const psg_acc {} = ps{i}[{index}];",
            names::per_sample_element(i)
        )
        .ok();
    }
}

/// The dtype prelude of every generated kernel (element type, accumulator, loads and stores, and the
/// DSL's scalar functions), for hand-written kernels that want the same definitions.
pub fn prelude(dtype: DType) -> &'static str {
    match dtype {
        DType::F32 => concat!(
            "typedef float psg_elem;\n",
            include_str!("cuda/acc_f32.cuh"),
            "__device__ __forceinline__ psg_acc psg_load(const psg_elem* g, long long i) { return g[i]; }\n",
            "__device__ __forceinline__ psg_elem psg_store(psg_acc v) { return v; }\n",
            include_str!("cuda/scalar_fns.cuh"),
        ),
        DType::F64 => concat!(
            "typedef double psg_elem;\n",
            include_str!("cuda/acc_f64.cuh"),
            "__device__ __forceinline__ psg_acc psg_load(const psg_elem* g, long long i) { return g[i]; }\n",
            "__device__ __forceinline__ psg_elem psg_store(psg_acc v) { return v; }\n",
            include_str!("cuda/scalar_fns.cuh"),
        ),
        DType::F16 => concat!(
            "typedef unsigned short psg_elem;\n",
            include_str!("cuda/acc_f32.cuh"),
            "__device__ __forceinline__ psg_acc psg_load(const psg_elem* g, long long i) {\n",
            "    float f; asm(\"cvt.f32.f16 %0, %1;\" : \"=f\"(f) : \"h\"(g[i])); return f;\n}\n",
            "__device__ __forceinline__ psg_elem psg_store(psg_acc v) {\n",
            "    unsigned short h; asm(\"cvt.rn.f16.f32 %0, %1;\" : \"=h\"(h) : \"f\"(v)); return h;\n}\n",
            include_str!("cuda/scalar_fns.cuh"),
        ),
        DType::BF16 => concat!(
            "typedef unsigned short psg_elem;\n",
            include_str!("cuda/acc_f32.cuh"),
            "__device__ __forceinline__ psg_acc psg_load(const psg_elem* g, long long i) {\n",
            "    return __uint_as_float(((unsigned int)g[i]) << 16);\n}\n",
            "/* Round to nearest even on the bits, NaN kept quiet (as the half crate): what\n",
            "   cvt.rn.bf16.f32 gives, for GPUs before sm_80, which lack that instruction. */\n",
            "__device__ __forceinline__ unsigned short psg_bf16_rne(float v) {\n",
            "    const unsigned int u = __float_as_uint(v);\n",
            "    if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((u >> 16) | 0x40u);\n",
            "    return (unsigned short)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);\n}\n",
            "__device__ __forceinline__ psg_elem psg_store(psg_acc v) {\n",
            "#if __CUDA_ARCH__ >= 800\n",
            "    unsigned short h; asm(\"cvt.rn.bf16.f32 %0, %1;\" : \"=h\"(h) : \"f\"(v)); return h;\n",
            "#else\n",
            "    return psg_bf16_rne(v);\n",
            "#endif\n}\n",
            include_str!("cuda/scalar_fns.cuh"),
        ),
    }
}
