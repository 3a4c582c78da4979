//! The scheduler: shared reductions are computed once, independent ones share a loop, and
//! dependent ones come in later waves.

use psg_codegen::cuda_tile::optimized_source;
use psg_codegen::ir::{BinOp, Column, Func, Let, Output, ReduceOp, Reduction, Scalar, UnOp};
use psg_codegen::schedule::{Plan, Step};
use psg_codegen::{generate, stats, validate, CodegenError, DType};

fn reduction(lets: Vec<Let>, output: Output) -> Reduction {
    Reduction {
        name: "r".into(),
        per_sample: vec!["s".into()],
        scalars: vec!["k".into()],
        lets,
        output,
    }
}

/// `let name = value;`
fn bind(name: &str, value: Scalar) -> Let {
    Let {
        name: name.into(),
        value,
    }
}

/// The median of the input: a plan's only selection, on the input's own keys.
fn median() -> Reduction {
    reduction(
        vec![],
        Output::Scalars(vec![stats::median(Column::input())]),
    )
}

/// The median of x * s[b] (the clipped median's shape): one selection on a stored expression.
fn scaled_median() -> Reduction {
    reduction(
        vec![],
        Output::Scalars(vec![stats::median(Column {
            value: Scalar::Load.bin(BinOp::Mul, Scalar::LoadPerSample(0)),
            keep: None,
        })]),
    )
}

/// The median of |x - median(x)|: a plan of two selections, the second on computed keys.
fn mad() -> Reduction {
    let column = |value: Scalar| Column { value, keep: None };
    reduction(
        vec![],
        Output::Scalars(vec![stats::median(column(Scalar::Call(
            Func::Abs,
            vec![Scalar::Load.bin(BinOp::Sub, stats::median(Column::input()))],
        )))]),
    )
}

#[test]
fn the_users_mean_and_the_mean_inside_std_are_one_loop() {
    let g = Column::input();
    let r = reduction(
        vec![
            bind("mu", stats::mean(g.clone())),
            bind("sigma", stats::std(g.clone(), Scalar::lit(1.0))),
        ],
        Output::Scalars(vec![Scalar::Local(0), Scalar::Local(1)]),
    );
    let plan = Plan::new(&r);
    // sum(g) once (the count of an unfiltered column is B, no loop), then the squares and the
    // deviations (which take back the mean's rounding) in one loop.
    assert_eq!(plan.temps.len(), 3, "{:?}", plan.temps);
    assert_eq!(
        plan.steps,
        vec![
            Step::Loop(vec![0]),
            Step::Let(0),
            Step::Loop(vec![1, 2]),
            Step::Let(1)
        ]
    );
    assert_eq!(plan.passes(), 2);
}

#[test]
fn independent_reductions_share_one_loop() {
    let g = Column::input();
    let r = reduction(
        vec![],
        Output::Scalars(vec![
            stats::sum(g.clone()),
            stats::max(g.clone()),
            stats::min(g),
        ]),
    );
    let plan = Plan::new(&r);
    assert_eq!(plan.steps, vec![Step::Loop(vec![0, 1, 2])]);
}

/// A let the output never reads costs nothing: its median is not scheduled. A let read only by
/// a live let, inside a reduction's column, is computed.
#[test]
fn lets_the_output_never_reads_are_not_computed() {
    let g = Column::input();
    let centred = |i: usize| Column {
        value: Scalar::Load.bin(BinOp::Sub, Scalar::Local(i)),
        keep: None,
    };
    let r = reduction(
        vec![
            bind("mu", stats::mean(g.clone())),
            bind("spread", stats::sum(centred(0))),
            bind(
                "unused",
                stats::median(Column {
                    value: Scalar::Call(
                        Func::Abs,
                        vec![Scalar::Load.bin(BinOp::Sub, stats::median(g.clone()))],
                    ),
                    keep: None,
                }),
            ),
        ],
        Output::Scalars(vec![Scalar::Local(1)]),
    );
    let plan = Plan::new(&r);
    assert!(
        !plan.steps.iter().any(|s| matches!(s, Step::Select(_))),
        "{:?}",
        plan.steps
    );
    assert_eq!(plan.lets[2].value, Scalar::lit(0.0));
    assert_eq!(plan.temps.len(), 2, "the mean's sum and the centred sum");
    // The same let, read by the output, is computed: two selections, the MAD's.
    let mut used = r.clone();
    used.output = Output::Scalars(vec![Scalar::Local(1), Scalar::Local(2)]);
    let plan = Plan::new(&used);
    assert!(
        plan.steps
            .iter()
            .filter(|s| matches!(s, Step::Select(_)))
            .count()
            >= 2
    );
}

#[test]
fn a_reduction_that_reads_a_let_waits_for_it() {
    let g = Column::input();
    let centred = Column {
        value: Scalar::Load.bin(BinOp::Sub, Scalar::Local(0)),
        keep: None,
    };
    let r = reduction(
        vec![bind("mu", stats::mean(g))],
        Output::Scalars(vec![stats::sum(centred)]),
    );
    let plan = Plan::new(&r);
    assert_eq!(plan.temps[1].wave, 2);
    assert_eq!(
        plan.steps,
        vec![Step::Loop(vec![0]), Step::Let(0), Step::Loop(vec![1])]
    );
}

#[test]
fn a_streaming_reduction_is_never_delayed_past_a_use() {
    // var = sum((x - mean)^2): the mean's sum must stay in the first loop.
    let r = reduction(
        vec![],
        Output::Scalars(vec![stats::var(Column::input(), Scalar::lit(1.0))]),
    );
    let plan = Plan::new(&r);
    let loops = plan
        .steps
        .iter()
        .filter(|s| matches!(s, Step::Loop(_)))
        .count();
    assert_eq!(loops, 2, "{:?}", plan.steps);
}

#[test]
fn median_selects_once_then_finds_the_next_value_in_one_pass() {
    let r = median();
    let plan = Plan::new(&r);
    // The lower middle value in one selection, then one loop: the upper middle value (a count
    // and a minimum above it) and the NaN count, which is delayed into that loop.
    let selects: Vec<usize> = plan
        .steps
        .iter()
        .enumerate()
        .filter(|(_, s)| matches!(s, Step::Select(_)))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(selects, vec![0], "{:?}", plan.steps);
    let loops: Vec<&Vec<usize>> = plan
        .steps
        .iter()
        .filter_map(|s| match s {
            Step::Loop(t) => Some(t),
            _ => None,
        })
        .collect();
    assert_eq!(loops.len(), 1, "{:?}", plan.steps);
    assert_eq!(loops[0].len(), 3, "{:?}", plan.steps);
    assert!(matches!(plan.steps.last(), Some(Step::Loop(_))));
}

#[test]
fn generated_sources_are_deterministic_and_named_by_dtype() {
    let g = Column::input();
    let r = reduction(
        vec![],
        Output::Scalars(vec![stats::quantile(g, Scalar::Param(0))]),
    );
    let a = generate(&r).unwrap();
    let b = generate(&r).unwrap();
    assert_eq!(a.cuda, b.cuda);
    assert_eq!(a.rust, b.rust);
    for d in DType::ALL {
        assert!(a.cuda[d.index()].contains(&format!("void r_{}(", d.name())));
    }
    assert!(a.cuda[DType::F64.index()].contains("typedef double psg_acc;"));
    assert!(a.cuda[DType::BF16.index()].contains("cvt.rn.bf16.f32"));
    assert!(a.cuda[DType::F16.index()].contains("cvt.f32.f16"));
}

#[test]
fn literals_read_back_exactly_in_each_language() {
    let r = reduction(
        vec![],
        Output::Scalars(vec![
            Scalar::lit(0.1),
            Scalar::lit(f64::NEG_INFINITY),
            Scalar::lit(3.0),
        ]),
    );
    let generated = generate(&r).unwrap();
    let f32_src = &generated.cuda[DType::F32.index()];
    assert!(f32_src.contains("psg_store(0.1f)"), "{f32_src}");
    assert!(f32_src.contains("psg_store((-psg_inf()))"));
    assert!(f32_src.contains("psg_store(3.0f)"));
    assert!(generated.cuda[DType::F64.index()].contains("psg_store(0.1)"));
    assert!(generated.rust.contains("out[0] = 0.1_f32;"));
    assert!(generated.rust.contains("out[0] = 0.1_f64;"));
}

#[test]
fn validation_rejects_what_the_emitters_cannot_print() {
    let bad_local = reduction(vec![], Output::Scalars(vec![Scalar::Local(0)]));
    assert!(matches!(
        validate(&bad_local),
        Err(CodegenError::BadReference { .. })
    ));

    let load_outside = reduction(vec![], Output::Scalars(vec![Scalar::Load]));
    assert!(validate(&load_outside).is_err());

    let no_output = reduction(vec![], Output::Scalars(vec![]));
    assert_eq!(
        validate(&no_output),
        Err(CodegenError::NoOutput("r".into()))
    );

    let mut bad_name = reduction(vec![], Output::Scalars(vec![Scalar::lit(1.0)]));
    bad_name.name = "2fast".into();
    assert!(matches!(validate(&bad_name), Err(CodegenError::BadName(_))));

    let param = reduction(vec![], Output::Scalars(vec![Scalar::Param(3)]));
    assert!(validate(&param).is_err());

    let rank_outside = reduction(
        vec![],
        Output::Scalars(vec![Scalar::Rank(Box::new(Column::input()))]),
    );
    assert!(validate(&rank_outside).is_err());
}

#[test]
fn a_rank_is_computed_by_an_inner_loop_in_both_languages() {
    let g = Column::input();
    let rank = Scalar::Rank(Box::new(g.clone()));
    let r = reduction(
        vec![],
        Output::Batch(Column {
            value: Scalar::select(
                rank.bin(BinOp::Lt, Scalar::lit(1.0)),
                Scalar::lit(0.0),
                Scalar::Load,
            ),
            keep: None,
        }),
    );
    let generated = generate(&r).unwrap();
    let cuda = &generated.cuda[0];
    assert!(
        cuda.contains("for (long long b2 = 0; b2 < n_b; ++b2)"),
        "{cuda}"
    );
    assert!(cuda.contains("(k2 == self_key && b2 < b)"));
    assert!(generated.rust.contains("for b2 in 0..n_b"));
    let _ = Func::Abs;
}

#[test]
fn selection_from_bf16_inputs_stops_at_their_last_mantissa_bit() {
    let r = reduction(
        vec![],
        Output::Scalars(vec![stats::median_low(Column::input())]),
    );
    let g = generate(&r).unwrap();
    // bf16 widened to f32 has 16 low bits its sign decides; f16 (whose widening rewrites NaN
    // payloads) and f32 count every digit in the kernel for large B, and select on every bit
    // in the bit-sliced one, where bf16 keeps and searches only the top 16 planes.
    let large = g.cuda_tile_large.as_ref().expect("a selection has one");
    assert!(large[DType::BF16.index()].contains("last = shift <= 16;"));
    assert!(large[DType::F16.index()].contains("last = shift <= 0;"));
    assert!(large[DType::F32.index()].contains("last = shift <= 0;"));
    // The bit-sliced kernel transposes a bf16 column's 16 bits as loaded and maps them to the
    // keys' top 16 planes, and an f32 column's 32; f16's keys are computed from the widened value.
    let bf16 = &g.cuda_tile[DType::BF16.index()];
    assert!(bf16.contains("if (b < n_bi) pl[m] = (psg_key)tc[(b) << 5];"));
    assert!(bf16.contains("for (int i = 0; i < 15; ++i) dst[(i + 16) << 8] = (pl[i] ^ sg) & vm;"));
    assert!(bf16.contains("for (int i = 31; i >= 16; --i) {"));
    assert!(bf16.contains("if ((sel >> 31) == 0u) sel |= 0xffffu;"));
    // An f32 column's keys split: the values' top 16 bits to planes 16-31, the low 16 as they
    // are.
    let f32 = &g.cuda_tile[DType::F32.index()];
    assert!(f32.contains("if (b < n_bi) pl[m] = __float_as_uint(tc[(b) << 5]);"));
    assert!(f32.contains("dst[(m >> 1) << 8] = __byte_perm(pl[m], pl[m + 1], 0x5410);"));
    assert!(f32.contains("for (int i = 0; i < 15; ++i) dst[(i + 16) << 8] = (pl[i] ^ sg) & vm;"));
    // Where a lane holds many keys left whose top 16 bits tie, it folds every word of its parts
    // (the halves masked by its keys left) to find whether the low 16 tie too: the kernel for
    // B up to 256 spreads the masks by prmt, the one for B up to 128 by multiplication (prmt
    // changed its registers).
    let mid = &g.cuda_tile_mid.as_ref().expect("a selection has one")[DType::F32.index()];
    for src in [f32, mid] {
        assert!(src.contains("// Hard: where every key left ties, theirs."));
        assert!(src.contains("if (__any_sync(0xffffffffu, hard && nl > 16)) {"));
        assert!(src.contains("an = (fl != 0u ? ~wo : wa) & 0xffffu;"));
    }
    assert!(f32.contains("prmt.b32 %0, %1, %2, 0xBBFF;"));
    assert!(!mid.contains("prmt.b32"));
    let f16 = &g.cuda_tile[DType::F16.index()];
    assert!(f16.contains("for (int i = 0; i < 32; ++i) dst[i << 8] = pl[i];"));
    for src in [f16, f32] {
        assert!(!src.contains("sel |= 0xffffu"));
    }
    // A column that is not g itself (its keys are computed in f32) counts every digit.
    let scaled = reduction(
        vec![],
        Output::Scalars(vec![stats::median_low(Column {
            value: Scalar::Binary(
                BinOp::Mul,
                Box::new(Scalar::Load),
                Box::new(Scalar::lit(2.0)),
            ),
            keep: None,
        })]),
    );
    let g = generate(&scaled).unwrap();
    assert!(g.cuda_tile_large.as_ref().unwrap()[DType::BF16.index()].contains("last = shift <= 0;"));
    // (Its tile holds the f32 products, whose 32 bits are transposed: split, top 16 first.)
    assert!(g.cuda_tile[DType::BF16.index()]
        .contains("for (int i = 0; i < 15; ++i) dst[(i + 16) << 8] = (pl[i] ^ sg) & vm;"));
    assert!(g.cuda_tile[DType::BF16.index()].contains("pl[m] >>= 16;"));
}

#[test]
fn a_column_read_through_one_expression_is_stored_in_the_tile_once() {
    let mul = |a: Scalar, b: Scalar| Scalar::Binary(BinOp::Mul, Box::new(a), Box::new(b));
    let column = |value: Scalar| Column { value, keep: None };
    // The median of g * s[b] (a clipped median): every pass reads x * s_b.
    let scaled = reduction(
        vec![],
        Output::Scalars(vec![stats::median(column(mul(
            Scalar::Load,
            Scalar::LoadPerSample(0),
        )))]),
    );
    let g = generate(&scaled).unwrap();
    let tile = &g.cuda_tile[DType::F32.index()];
    // One definition of the expression, applied as the tile is filled: to each value unpacked
    // from registers, to each element loaded one by one, and in the slab's first pass to the rows
    // `cp.async` copied (from the first row past the prefetch, on sm_80 and later).
    assert!(tile.contains("return (x * ps0_b);"), "{tile}");
    assert_eq!(tile.matches("ps0[b]").count(), 1, "{tile}");
    assert!(
        tile.contains("psg_tf(__uint_as_float(v.x), psg_b)"),
        "{tile}"
    );
    assert!(
        tile.contains(
            "psg_tf(psg_tile_of(g, (long long)(i >> tile_log2) * n_p + col), i >> tile_log2)"
        ),
        "{tile}"
    );
    assert!(
        tile.contains("const int psg_raw_from = vec ? 8 * rstep : n_bi;"),
        "{tile}"
    );
    assert!(
        tile.contains("tile[cs * n_bi + lane + (b << 5)] = psg_tf(psg_tile_get(tc[(b) << 5]), b);"),
        "{tile}"
    );
    // The selection transposes the stored values' bits.
    assert!(
        tile.contains("if (b < n_bi) pl[m] = __float_as_uint(tc[(b) << 5]);"),
        "{tile}"
    );
    // The thread-per-column kernel and the CPU code still compute it where they read it.
    assert!(g.cuda[DType::F32.index()].contains("(x * ps0_b)"));
    // From bf16 the tile holds f32 products (not the narrow bf16 elements): selection takes
    // every bit.
    let bf16 = &g.cuda_tile[DType::BF16.index()];
    assert!(bf16.contains("pl[m] >>= 16;"), "{bf16}");
    assert!(bf16.contains("for (int i = 0; i < 15; ++i) dst[(i + 16) << 8] = (pl[i] ^ sg) & vm;"));
    assert!(bf16.contains("typedef psg_acc psg_tile;"), "{bf16}");
    // Every row of a widened tile passes through registers: no pass rewrites any.
    assert!(
        bf16.contains("psg_tf(__uint_as_float(v.x << 16), psg_b)"),
        "{bf16}"
    );
    assert!(!bf16.contains("psg_raw_from"), "{bf16}");

    // Not for a bare element, two different expressions, or a map.
    let bare = median();
    let two = reduction(
        vec![],
        Output::Scalars(vec![
            stats::median(column(Scalar::Call(Func::Abs, vec![Scalar::Load]))),
            stats::median(column(mul(Scalar::Load, Scalar::Load))),
        ]),
    );
    let once = reduction(
        vec![],
        Output::Batch(column(mul(Scalar::Load, Scalar::lit(2.0)))),
    );
    // A map (no pass) of 16-bit input keeps no tile at all: its streaming kernel moves g
    // through registers. In f32 and f64 it keeps the tiled kernel, its tile as loaded.
    let g = generate(&once).unwrap();
    for d in DType::ALL {
        let k = &g.cuda_tile[d.index()];
        let narrow = matches!(d, DType::BF16 | DType::F16);
        assert_eq!(k.contains("streaming map"), narrow, "{k}");
        assert_eq!(!k.contains("psg_tile"), narrow, "{k}");
        assert_eq!(g.tile_bytes_per_element[d.index()] == 0, narrow);
        assert_eq!(g.tile_fixed_bytes[d.index()] == 0, narrow);
    }
    assert!(!g.cuda_tile[DType::F32.index()].contains("The tile holds"));
    for r in [bare, two] {
        let g = generate(&r).unwrap();
        assert!(
            !g.cuda_tile[DType::F32.index()].contains("The tile holds"),
            "{}",
            g.cuda_tile[DType::F32.index()]
        );
        // Untransformed, bf16 and f16 tiles keep the 16-bit elements; f32's holds f32.
        assert!(g.cuda_tile[DType::BF16.index()].contains("typedef psg_elem psg_tile;"));
        assert!(g.cuda_tile[DType::F16.index()].contains("typedef psg_elem psg_tile;"));
        assert!(g.cuda_tile[DType::F32.index()].contains("typedef psg_acc psg_tile;"));
    }
}

#[test]
fn the_nan_guard_of_a_selection_runs_after_it_and_only_where_it_may_count_something() {
    let r = reduction(
        vec![],
        Output::Scalars(vec![stats::median_low(Column::input())]),
    );
    // The scheduler counts the NaNs in the first wave, before the selection.
    let plan = Plan::new(&r);
    assert!(
        matches!(plan.steps.as_slice(), [Step::Loop(_), Step::Select(_), ..]),
        "{:?}",
        plan.steps
    );
    let g = generate(&r).unwrap();
    let tile = &g.cuda_tile[DType::F32.index()];
    // The tiled kernel selects first; the top 8 bits tell whether a NaN can be there (a NaN's
    // key has its top 8 bits all clear or all set: for a column's own keys, the value's
    // exponent is all ones), read as the keys are transposed, and the count runs only where
    // one can.
    let check = tile
        .find("nonfinite = active && (pl[8] & pl[9] & pl[10] & pl[11] & pl[12] & pl[13] & pl[14] & vm) != 0u;")
        .expect(tile);
    let clean = tile
        .find("t1_clean = __syncthreads_and(!nonfinite);")
        .expect(tile);
    let count = tile.find("if (psg_isnan(x))").expect(tile);
    let vote = tile.find("if (t1_clean) {").expect(tile);
    assert!(check < clean && clean < vote && vote < count, "{tile}");
    // Computed keys (two columns, so the tile holds neither): the selecting lanes check the
    // keys' top 8 bit planes.
    let computed = reduction(
        vec![],
        Output::Scalars(vec![
            stats::median_low(Column {
                value: Scalar::Call(Func::Abs, vec![Scalar::Load]),
                keep: None,
            }),
            stats::median_low(Column {
                value: Scalar::Load.bin(BinOp::Mul, Scalar::Load),
                keep: None,
            }),
        ]),
    );
    let g2 = generate(&computed).unwrap();
    let tile2 = &g2.cuda_tile[DType::F32.index()];
    assert!(
        tile2.contains("if (i >= 24) { h0 &= a; h1 &= b; l0 |= a; l1 |= b; }"),
        "{tile2}"
    );
    assert!(
        tile2.contains("totals[c] = !lo && hi == n_bi - pick[32 + c];"),
        "{tile2}"
    );
    assert!(!tile2.contains("nonfinite"), "{tile2}");
    // In f64 it counts digits, 16-bit halves: the first digit pass tells.
    let f64 = &g.cuda_tile[DType::F64.index()];
    let clean = f64
        .find("t1_clean = !done && (bins[lane] & 0xffff) == 0")
        .expect(f64);
    assert!(clean < f64.find("if (t1_clean) {").expect(f64));
    // The kernel for large B, with 32-bit digit counts, the same.
    let large = &g.cuda_tile_large.as_ref().expect("a selection has one")[DType::F32.index()];
    let clean = large
        .find("t1_clean = !done && bins[lane] == 0 && bins[255 * 32 + lane] == n_bi")
        .expect(large);
    assert!(clean < large.find("if (t1_clean) {").expect(large));
    // Not when the pass holds anything a selection does not settle.
    let odd = reduction(
        vec![],
        Output::Scalars(vec![
            stats::median_low(Column::input()),
            stats::max(Column::input()),
        ]),
    );
    let g = generate(&odd).unwrap();
    let tile = &g.cuda_tile[DType::F32.index()];
    assert!(!tile.contains("_clean"), "{tile}");
    // The CPU code and the thread-per-column kernel count as scheduled.
    let g = generate(&r).unwrap();
    assert!(!g.cuda[DType::F32.index()].contains("_clean"));
}

/// Asserts that `text` holds every one of `needles`, each first found after the one before.
fn assert_in_order(text: &str, needles: &[&str]) {
    let at: Vec<usize> = needles
        .iter()
        .map(|n| {
            text.find(n)
                .unwrap_or_else(|| panic!("{n:?} is missing from:\n{text}"))
        })
        .collect();
    assert!(
        at.windows(2).all(|w| w[0] < w[1]),
        "out of order, {needles:?} at {at:?}:\n{text}"
    );
}

/// The rest of `text` from `needle`, which it must hold exactly once.
fn from_only<'a>(text: &'a str, needle: &str) -> &'a str {
    assert_eq!(text.matches(needle).count(), 1, "{needle:?} in:\n{text}");
    &text[text.find(needle).unwrap()..]
}

/// The kernels whose selections count digits on keys of more than two digits: the large
/// kernel's f32, f16 and f64, and the packed kernel's f64.
fn digit_pass_kernels(g: &psg_codegen::Generated) -> [&String; 4] {
    let large = g.cuda_tile_large.as_ref().unwrap();
    [
        &large[DType::F32.index()],
        &large[DType::F16.index()],
        &large[DType::F64.index()],
        &g.cuda_tile[DType::F64.index()],
    ]
}

/// Digit passes on keys of more than two digits look for a bucket of one repeated key: every
/// pass after the second, and the second where some column's first bucket holds more than 3/4
/// of its keys (a warp's vote, no barrier); a tied column is done with the bucket's key, and
/// with the next value the gathering pass finds the least key above it. A bf16 column's own
/// keys (two digits) have none of it.
#[test]
fn digit_passes_stop_at_a_bucket_of_one_repeated_key() {
    let median = generate(&median()).unwrap();
    for tile in digit_pass_kernels(&median) {
        assert_in_order(
            tile,
            &[
                "found[lane] = ~(psg_key)0; found[64 + lane] = ~(psg_key)0;",
                "if (!done && !track) {",
                "hi = min(hi, off ^ low_bits);",
                "if (track && found[lane] == (found[64 + lane] ^ ((((psg_key)1) << (shift + 8)) - 1))) {",
                "track = shift > ",
                "if (gather || tied) {",
                "if (tied) { t1_le = (psg_acc)(k - rem + pick[32 + lane]); t1_above = over[lane]; }",
            ],
        );
        assert!(tile.contains("__any_sync(0xffffffffu, !done && 4 * pick[32 + lane] > 3 * n_bi)"));
        assert!(tile.contains("const psg_key hi = tied ? prefix : prefix |"));
        assert!(tile.contains("if (gather && ((key ^ prefix) >> gshift) == 0)"));
    }
    let bf16 = &median.cuda_tile_large.as_ref().unwrap()[DType::BF16.index()];
    assert!(
        !bf16.contains("tied") && !bf16.contains("track") && !bf16.contains("found[64 + lane]"),
        "{bf16}"
    );
    // The MAD's distances of bf16 input are f32 keys: its second selection looks, its first not.
    let mad = generate(&mad()).unwrap();
    let tile = &mad.cuda_tile_large.as_ref().unwrap()[DType::BF16.index()];
    assert_eq!(
        tile.matches("bool tied = false, track = false;").count(),
        1,
        "{tile}"
    );
}

/// The median's upper middle value (a count at or below the lower one and the least value above
/// it) comes from the selection where every column of the block gathered its bucket (digit
/// passes), or from every bit-sliced one; the pass that computes it, with the count of NaNs,
/// runs only where some column did not or may hold a NaN. Not for a bf16 column's own keys in
/// digit passes (fixed after two digits, rarely gathered), nor for order statistics without a
/// next value.
#[test]
fn a_selection_finds_the_next_value_where_it_gathers() {
    let median = generate(&median()).unwrap();
    let large = median.cuda_tile_large.as_ref().unwrap();
    for tile in digit_pass_kernels(&median) {
        assert_in_order(
            tile,
            &[
                "atomicMin(&over[lane], least);",
                "over[32 + lane] = above;",
                "t1_next = __syncthreads_and(!active || (gather || tied));",
                "if (t1_clean && t1_next) {",
                "if (psg_isnan(x))",
            ],
        );
        assert!(tile.contains("t2 = t1_le;") && tile.contains("t3 = psg_from_key(t1_above);"));
    }
    // Bit-sliced: rank k + 1 (see the next test), then the block's vote, for a bf16 column's
    // own keys too.
    for d in [DType::F32, DType::F16, DType::BF16] {
        let tile = &optimized_source(&median.cuda_tile[d.index()]);
        assert_in_order(
            tile,
            &[
                "found[32 + c] = kk + 1 < pick[32 + c] ? sel : ~0u;",
                "t1_next = __syncthreads_and(!active || valid);",
                "if (t1_clean && t1_next) {",
                "if (psg_isnan(x))",
            ],
        );
    }
    let tile = &large[DType::BF16.index()];
    assert!(
        !tile.contains("_next") && !tile.contains("const over"),
        "{tile}"
    );
    // Both of the MAD's selections in f32; in bf16 only the second (its keys are computed).
    let mad = generate(&mad()).unwrap();
    let nexts = |d: DType| {
        optimized_source(&mad.cuda_tile[d.index()])
            .matches("_next = __syncthreads_and")
            .count()
    };
    assert_eq!((nexts(DType::F32), nexts(DType::BF16)), (2, 2));
    let large_nexts = |d: DType| {
        optimized_source(&mad.cuda_tile_large.as_ref().unwrap()[d.index()])
            .matches("_next = __syncthreads_and")
            .count()
    };
    assert_eq!((large_nexts(DType::F32), large_nexts(DType::BF16)), (2, 1));
    let low = generate(&reduction(
        vec![],
        Output::Scalars(vec![stats::median_low(Column::input())]),
    ))
    .unwrap();
    assert!(!low.cuda_tile[DType::F32.index()].contains("const over"));
    assert!(!low.cuda_tile[DType::F32.index()].contains("found[32 + c] = above;"));
}

/// Where the plan reads the next value only where it is not a tie (the median's and the
/// quantile's `select(count_le > k + 1, value, above)`), warps 4-7 of the bit-sliced kernel
/// select rank k + 1 beside rank k and nothing searches for the least key above, keys of bf16
/// input too; a plan that reads the least value above on its own keeps the search.
#[test]
fn rank_k_plus_one_stands_for_the_next_value_where_a_tie_is_not_read() {
    let searches =
        |tile: &str| tile.contains("psg_key least = 0u;") || tile.contains("psg_key above = 0u;");
    for r in [median(), mad()] {
        let g = generate(&r).unwrap();
        for d in [DType::F32, DType::F16, DType::BF16] {
            let tile = &g.cuda_tile[d.index()];
            assert!(tile.contains("int rem = second ? kk + 1 : kk;"), "{tile}");
            assert!(tile.contains("found[32 + c] = kk + 1 < pick[32 + c] ? sel : ~0u;"));
            assert!(!searches(tile), "{tile}");
        }
    }
    let column = Column::input();
    let k = Scalar::Param(0);
    let value = Scalar::reduce(ReduceOp::Kth(k.clone()), column.clone());
    let at_or_below = Scalar::Call(Func::TotalLe, vec![column.value.clone(), value.clone()]);
    let above = Scalar::reduce(
        ReduceOp::MinTotal,
        column
            .clone()
            .filtered(Scalar::Unary(UnOp::Not, Box::new(at_or_below))),
    );
    let raw = reduction(
        vec![],
        Output::Scalars(vec![stats::next_in_order(column, value, k), above]),
    );
    let g = generate(&raw).unwrap();
    // f32: the twin, searching where it ties; bf16: the search after the selection.
    let f32 = &g.cuda_tile[DType::F32.index()];
    assert!(f32.contains("if (__any_sync(0xffffffffu, tie)) {"), "{f32}");
    let bf16 = &g.cuda_tile[DType::BF16.index()];
    assert!(
        bf16.contains("found[32 + c] = above;") && searches(bf16),
        "{bf16}"
    );
    assert!(!bf16.contains("int rem = second ? kk + 1 : kk;"));
}

#[test]
fn sixteen_bit_pairs_compute_a_section_before_another_pass_once_a_block() {
    // The z-score mean: mean, then std, then the mean of the values within k std of the mean.
    let g = Column::input();
    let x = || Box::new(Scalar::Load);
    let far = Scalar::Binary(
        BinOp::Gt,
        Box::new(Scalar::Call(
            Func::Abs,
            vec![Scalar::Binary(BinOp::Sub, x(), Box::new(Scalar::Local(0)))],
        )),
        Box::new(Scalar::Binary(
            BinOp::Mul,
            Box::new(Scalar::Param(0)),
            Box::new(Scalar::Local(1)),
        )),
    );
    let kept = Column {
        value: Scalar::Load,
        keep: Some(Scalar::Unary(UnOp::Not, Box::new(far))),
    };
    let r = reduction(
        vec![
            bind("mu", stats::mean(g.clone())),
            bind("sd", stats::std(g, Scalar::lit(1.0))),
        ],
        Output::Scalars(vec![stats::mean(kept)]),
    );
    let gen = generate(&r).unwrap();
    for d in [DType::BF16, DType::F16] {
        let tile = &gen.cuda_tile[d.index()];
        let pairs = &tile[tile.find("cs += 64").unwrap()..tile.find("cs += 32").unwrap()];
        // Warp 0 combines each section before another pass and computes its lets, then every
        // warp reads them: two such sections, each with its barrier.
        assert_eq!(pairs.matches("    if (w == 0) {\n").count(), 2, "{pairs}");
        assert!(
            pairs.contains("psg_put((psg_acc*)part2 + 0 + lane, t0_0);"),
            "{pairs}"
        );
        assert!(pairs.contains("t0_1 = psg_get<decltype(t0_1)>((psg_acc*)part2 + 32 + lane);"));
        // A let is declared before the branches, of its expression's type.
        assert!(
            pairs.contains("    psg_plain<decltype((t0_0 / nb))>::type l0_mu_0;\n    psg_plain<decltype((t0_1 / nb))>::type l0_mu_1;\n    if (once) {")
        );
        assert!(
            pairs.contains("l0_mu_0 = psg_get<decltype(l0_mu_0)>((psg_acc*)part2 + 64 + lane);")
        );
        // Elsewhere every warp computes it, as before.
        assert!(
            pairs.contains("    } else {\n    {\n        float2 q[8];"),
            "{pairs}"
        );
        assert!(pairs.contains("    l0_mu_0 = (t0_0 / nb);\n    l0_mu_1 = (t0_1 / nb);\n    }\n"));
        // The second section's values go to the second half of the partials: 2 slots x 8
        // warps x 32 float2.
        assert!(
            pairs.contains("psg_put((psg_acc*)part2 + 1024 + lane, t1_0);"),
            "{pairs}"
        );
        // The passes after read the lets, not their expressions.
        assert!(
            pairs.contains("t1_0_p += ((x - l0_mu_0) * (x - l0_mu_0));"),
            "{pairs}"
        );
        assert!(!pairs[pairs.find("t1_0_p +=").unwrap()..].contains("(t0_0 / nb)"));
        // The last section: warps 0 and 1, which store, alone (where `once`).
        let last = &pairs[pairs
            .find("    if (w < 2 || !once) {\n")
            .expect("the last section")..];
        assert!(last.contains("if (active1 && w == 1)"), "{last}");
        assert!(!last.contains("psg_put"), "{last}");
    }
    // One column a thread: the same, 32 accumulators a value; the sums' combined values are
    // declared for the block and assigned in warp 0; the last section stays every warp's.
    for d in [DType::F32, DType::F64] {
        let tile = &gen.cuda_tile[d.index()];
        assert_eq!(tile.matches("    if (w == 0) {\n").count(), 2, "{tile}");
        assert!(tile.contains("    psg_acc t0;\n"), "{tile}");
        assert!(tile.contains("psg_put(part + 32 + lane, l0_mu);"), "{tile}");
        assert!(tile.contains("l0_mu = psg_get<decltype(l0_mu)>(part + 32 + lane);"));
        assert!(
            tile.contains("const bool once = n_bi > 128 && n_bi <= 256;"),
            "{tile}"
        );
        // A quick build computes every section once a warp.
        assert!(tile.contains("#if defined(PSG_QUICK)\n    const bool once = false;\n#else\n"));
        assert!(
            tile.contains("t1_p[0] += ((x - l0_mu) * (x - l0_mu));"),
            "{tile}"
        );
        let last = &tile[tile.rfind("psg_get").unwrap()..];
        assert!(
            last.contains("const psg_acc t3 = part[(0 * 8 + 0) * 32 + lane]"),
            "{last}"
        );
    }
    // Not a section that hands on more than 4 values a column: a minimum and a maximum with
    // their flags, a sum and five lets (NVRTC gave such a kernel 116 registers where either
    // form alone takes 64).
    let lets = vec![
        bind("lo", stats::min(Column::input())),
        bind("hi", stats::max(Column::input())),
        bind(
            "wide",
            Scalar::Binary(
                BinOp::Gt,
                Box::new(Scalar::Binary(
                    BinOp::Sub,
                    Box::new(Scalar::Local(1)),
                    Box::new(Scalar::Local(0)),
                )),
                Box::new(Scalar::Param(0)),
            ),
        ),
        bind(
            "mid",
            Scalar::Binary(
                BinOp::Div,
                Box::new(Scalar::Binary(
                    BinOp::Add,
                    Box::new(Scalar::Local(0)),
                    Box::new(Scalar::Local(1)),
                )),
                Box::new(Scalar::lit(2.0)),
            ),
        ),
        bind("same", Scalar::Local(3)),
    ];
    let shifted = Column {
        value: Scalar::Select(
            Box::new(Scalar::Local(2)),
            Box::new(Scalar::Binary(
                BinOp::Sub,
                Box::new(Scalar::Load),
                Box::new(Scalar::Local(4)),
            )),
            Box::new(Scalar::Call(Func::Abs, vec![Scalar::Load])),
        ),
        keep: None,
    };
    let wide = reduction(
        lets,
        Output::Scalars(vec![
            stats::sum(shifted),
            stats::std(Column::input(), Scalar::lit(1.0)),
        ]),
    );
    let gen_wide = generate(&wide).unwrap();
    for d in DType::ALL {
        let tile = &gen_wide.cuda_tile[d.index()];
        assert!(
            !tile.contains("psg_put(part") && !tile.contains("psg_put((psg_acc*)part2"),
            "{d:?}"
        );
    }
    // Not in a plan that selects.
    let med = reduction(
        vec![bind("m", stats::median(Column::input()))],
        Output::Scalars(vec![stats::mean(Column::input())]),
    );
    let gen = generate(&med).unwrap();
    for d in DType::ALL {
        assert!(!gen.cuda_tile[d.index()].contains("psg_put"));
    }
}

#[test]
fn sixteen_bit_tiles_of_streaming_passes_compute_two_columns_a_thread() {
    let g = Column::input();
    let var = reduction(
        vec![],
        Output::Scalars(vec![stats::var(g.clone(), Scalar::lit(1.0))]),
    );
    let gen = generate(&var).unwrap();
    for d in [DType::BF16, DType::F16] {
        let tile = &gen.cuda_tile[d.index()];
        // The paired slabs where the tile is 64 columns or wider, one column a thread else.
        assert!(tile.contains("if (tile_log2 >= 6) {"), "{tile}");
        assert!(tile.contains("for (int cs = 0; cs < tile_w; cs += 64) {"));
        assert!(tile.contains("for (int cs = 0; cs < tile_w; cs += 32) {"));
        assert!(tile.contains("const unsigned int pair = tc[(b) << 5];"));
        assert!(tile.contains("psg_pair_get(pair, 1)"));
        // Each path's loads with compile-time slab addresses: 64 columns, then 32.
        let wide =
            "#define PSG_SLAB(ROW, C) (tile + ((((C) >> 6) * n_bi + (ROW)) << 6) + ((C) & 63))";
        let narrow =
            "#define PSG_SLAB(ROW, C) (tile + ((((C) >> 5) * n_bi + (ROW)) << 5) + ((C) & 31))";
        let (at_wide, at_narrow) = (tile.find(wide).unwrap(), tile.find(narrow).unwrap());
        assert!(at_wide < tile.find("cs += 64").unwrap());
        assert!(tile.find("cs += 64").unwrap() < at_narrow);
        assert!(at_narrow < tile.find("cs += 32").unwrap());
        // Partials of 64 columns, in two halves: 2 x 8 warps x 64 x 4 bytes.
        assert_eq!(gen.tile_fixed_bytes[d.index()], 2 * 8 * 64 * 4);
        assert_eq!(gen.tile_bytes_per_element[d.index()], 2);
        assert_eq!(gen.tile_min_log2[d.index()], 6);
    }
    for d in [DType::F32, DType::F64] {
        let tile = &gen.cuda_tile[d.index()];
        assert!(!tile.contains("psg_pair_get"), "{tile}");
        assert!(!tile.contains("if (tile_log2 >= 6)"), "{tile}");
        let acc = if d == DType::F64 { 8 } else { 4 };
        // Four slots of partials: the second pass sums the squares and the deviations (which
        // take back the mean's rounding; 16-bit input does without them, above).
        assert_eq!(gen.tile_fixed_bytes[d.index()], 4 * 8 * 32 * acc);
        assert_eq!(gen.tile_min_log2[d.index()], 5);
    }
    // A column-mode kernel beside the tiled one: 8 partials a sum in registers, one barrier (the
    // tile's), 256-column rows.
    let cols = gen.cuda_column.as_ref().expect("a column-mode kernel");
    for d in DType::ALL {
        let k = &cols[d.index()];
        assert!(
            k.contains(&format!("void __launch_bounds__(256) r_{}_cols(", d.name())),
            "{k}"
        );
        assert!(k.contains("t0_p[r] += x;"), "{k}");
        assert!(k.contains("const psg_acc t0 = t0_p[0] + t0_p[1] + t0_p[2] + t0_p[3]"));
        assert!(k.contains("psg_tile_get(tc[(b) << 8])"));
        assert_eq!(k.matches("__syncthreads()").count(), 2, "{k}");
        assert!(!k.contains("PSG_FETCH(t + gridDim.x, 0)"), "{k}");
    }
    // Not with a selection or ranks.
    let median = reduction(vec![], Output::Scalars(vec![stats::median(g.clone())]));
    let gen = generate(&median).unwrap();
    for d in DType::ALL {
        assert!(!gen.cuda_tile[d.index()].contains("psg_pair_get"));
        assert_eq!(gen.tile_min_log2[d.index()], 5);
    }
    assert!(gen.cuda_column.is_none());
    // A per-sample output after streaming passes: two columns a thread in 16-bit tiles, each
    // sample's pair written as one word where the rows are 4-byte aligned; a column mode whose
    // thread writes its column's every sample.
    let centred = Output::Batch(Column {
        value: Scalar::Binary(
            BinOp::Sub,
            Box::new(Scalar::Load),
            Box::new(stats::mean(g.clone())),
        ),
        keep: None,
    });
    let gen = generate(&reduction(vec![], centred)).unwrap();
    for d in DType::ALL {
        let tile = &gen.cuda_tile[d.index()];
        let narrow = matches!(d, DType::BF16 | DType::F16);
        assert_eq!(tile.contains("psg_pair_get"), narrow, "{tile}");
        assert_eq!(
            tile.contains("*(unsigned int*)psg_dst = (unsigned int)psg_o[0] | ((unsigned int)psg_o[1] << 16);"),
            narrow,
            "{tile}"
        );
        assert_eq!(gen.tile_min_log2[d.index()], if narrow { 6 } else { 5 });
    }
    let cols = gen.cuda_column.as_ref().expect("a column-mode kernel");
    for d in DType::ALL {
        let k = &cols[d.index()];
        assert!(
            k.contains("out0[(long long)b * n_p + p] = psg_store("),
            "{k}"
        );
        assert_eq!(k.matches("__syncthreads()").count(), 2, "{k}");
    }
    // A per-sample output of no pass (a map) has no column mode: nothing to keep in registers.
    let map = Output::Batch(Column {
        value: Scalar::Call(Func::Abs, vec![Scalar::Load]),
        keep: None,
    });
    assert!(generate(&reduction(vec![], map))
        .unwrap()
        .cuda_column
        .is_none());
}

/// A plan's only selection, on 4-byte keys other than a bf16 column's own, gathers up to 64 keys
/// and sorts the lists across a warp where some list of the block is longer than 16; plans of
/// two selections, 8-byte keys and a bf16 column's own keys keep lists of 32, ranked.
#[test]
fn a_lone_selection_sorts_long_lists() {
    let sorts = |src: &str| {
        src.contains("psg_warp_sort32x4(a, lane);")
            && src.contains("psg_warp_sort64(x, y, lane);")
            && src.contains("if (__syncthreads_or(gather && pick[32 + lane] > 16)) {")
            && src.contains("const int cap = 64,")
            && src.contains("cand[lane * 65 + atomicAdd(&totals[lane], 1)] = key;")
    };
    let ranks_only = |src: &str| {
        !src.contains("psg_warp_sort")
            && src.contains("const int cap = 32,")
            && src.contains("cand[lane * 33 + atomicAdd(&totals[lane], 1)] = key;")
    };
    let median = generate(&median()).unwrap();
    let large = |g: &psg_codegen::Generated, d: DType| {
        g.cuda_tile_large.as_ref().unwrap()[d.index()].clone()
    };
    for d in [DType::F32, DType::F16] {
        let tile = &large(&median, d);
        assert!(sorts(tile), "{tile}");
        // The short lists' ranking stays, in the other branch.
        let sort = tile.find("psg_warp_sort32x4(a, lane);").unwrap();
        let rank = tile.find("if (n_bi < 192) {").expect(tile);
        assert!(sort < rank, "{tile}");
        // Bit-sliced below: no lists at all.
        let packed = &median.cuda_tile[d.index()];
        assert!(!packed.contains("psg_warp_sort") && !packed.contains("for (;;)"));
    }
    assert!(ranks_only(&large(&median, DType::BF16)));
    assert!(ranks_only(&median.cuda_tile[DType::F64.index()]));
    assert!(ranks_only(&large(&median, DType::F64)));
    // Read through a stored expression, a bf16 column's keys are f32 products: sorted.
    let scaled = generate(&scaled_median()).unwrap();
    assert!(sorts(&large(&scaled, DType::BF16)));
    let mad = generate(&mad()).unwrap();
    for d in [DType::F32, DType::BF16] {
        assert!(ranks_only(&large(&mad, d)), "{d:?}");
    }
}

/// The kernel for small B sorts whole columns and counts no digit; it settles the next value and
/// the NaN guard from the sorted lists (a bf16 column's own keys too, which the digit passes
/// leave to a pass of their own), and each of the MAD's two selections sorts.
#[test]
fn the_small_batch_kernel_sorts_whole_columns() {
    let median = generate(&median()).unwrap();
    let small = median
        .cuda_tile_small
        .as_ref()
        .expect("a selection has one");
    for d in DType::ALL {
        // The optimized build's (the quick one counts digits, see `quick_digit_select`).
        let src = &optimized_source(&small[d.index()]);
        assert!(
            src.contains(&median.tile_small_kernel_names[d.index()]),
            "{d:?}"
        );
        assert!(src.contains("psg_group_sort<4>(a, q);"), "{src}");
        assert!(src.contains("psg_group_sort<8>(a, q);"), "{src}");
        assert!(!src.contains("psg_warp_sort"), "{src}");
        assert!(!src.contains("for (;;)"), "no digit passes: {src}");
        assert!(!src.contains("atomicAdd("), "no counting: {src}");
        assert!(src.contains("if (t1_clean && t1_next) {"), "{d:?}: {src}");
    }
    // The large-B kernel's bf16 median counts its second digit and runs the next value's pass.
    assert!(!median.cuda_tile_large.as_ref().unwrap()[DType::BF16.index()].contains("t1_next"));
    // Four blocks a multiprocessor, 4 vectors prefetched; three where an f32 tile holds a
    // transform of the element (its rows past the prefetch take a pass for it).
    for d in [DType::F32, DType::BF16] {
        let src = &small[d.index()];
        assert!(src.contains("__launch_bounds__(256, 4)"), "{d:?}");
        assert!(src.contains("for (int u = 0; u < 4; ++u)"), "{d:?}");
    }
    let scaled = generate(&scaled_median()).unwrap();
    let small_scaled = scaled.cuda_tile_small.as_ref().unwrap();
    assert!(small_scaled[DType::F32.index()].contains("__launch_bounds__(256, 3)"));
    assert!(small_scaled[DType::BF16.index()].contains("__launch_bounds__(256, 4)"));
    let mad = generate(&mad()).unwrap();
    let src = &mad.cuda_tile_small.as_ref().unwrap()[DType::BF16.index()];
    assert_eq!(src.matches("psg_group_sort<8>(a, q);").count(), 2, "{src}");
    // A reduction that does not select has none.
    let mean = generate(&reduction(
        vec![],
        Output::Scalars(vec![stats::mean(Column::input())]),
    ))
    .unwrap();
    assert!(mean.cuda_tile_small.is_none());
}

/// Up to `PACKED_BINS_MAX_B` a selection on 32-bit keys is bit-sliced: keys to bit planes in
/// registers, then a bit at a time from the top (a count, two shuffles) in lanes of four a
/// column; no digit counts. The kernel is held to three blocks' registers (two for a plan of
/// one selection on whole planes, as the median's on f32 keys; four on half planes, a bf16
/// column's own keys), and the first selection, not the loop's head, issues the next tile's
/// loads. 64-bit keys count digits.
#[test]
fn selections_up_to_256_samples_are_bit_sliced() {
    const { assert!(psg_codegen::cuda_tile::PACKED_BINS_MAX_B <= 256) };
    let mad = generate(&mad()).unwrap();
    let median = generate(&median()).unwrap();
    for d in [DType::F32, DType::F16] {
        assert!(
            median.cuda_tile[d.index()].contains("__launch_bounds__(256, 2)"),
            "{d:?}"
        );
    }
    // A bf16 column's own keys take half the planes, and four blocks.
    let bf16 = &median.cuda_tile[DType::BF16.index()];
    assert!(
        bf16.contains("__launch_bounds__(256, 4)") && bf16.contains("(psg_key*)bins - (16 << 8)")
    );
    for d in [DType::F32, DType::BF16, DType::F16] {
        // What the optimized build compiles (the f32 median's quick form aside).
        let src = &optimized_source(&mad.cuda_tile[d.index()]);
        assert!(src.contains("__launch_bounds__(256, 3)"), "{d:?}");
        assert!(
            !src.contains("bins - (16 << 8)"),
            "the MAD's distances fill 32 planes"
        );
        assert_eq!(src.matches("psg_transpose32(pl);").count(), 2, "{src}");
        // A selection's count of a bit (the split's low bits have one of their own, deeper).
        assert_eq!(
            src.matches("\n                int c0 = __popc(z0) + __popc(z1);")
                .count(),
            2
        );
        assert!(!src.contains("atomicAdd("), "no digit counts: {src}");
        assert_eq!(
            src.matches("PSG_FETCH(t + gridDim.x, 0)").count(),
            1,
            "{src}"
        );
        let fetch = src
            .find(
                "if (cs == 0 && vec && PSG_AHEAD && t + gridDim.x < n_tiles) PSG_FETCH(t + gridDim.x, 0);",
            )
            .expect(src);
        assert!(src.find("psg_transpose32(pl);").unwrap() < fetch);
        // The kernel for large B counts digits, held to three blocks.
        let large = &mad.cuda_tile_large.as_ref().unwrap()[d.index()];
        assert!(large.contains("__launch_bounds__(256, 3)") && large.contains("for (;;)"));
        assert!(!large.contains("psg_transpose32"));
    }
    let f64 = &mad.cuda_tile[DType::F64.index()];
    assert!(f64.contains("for (;;)") && !f64.contains("psg_transpose32"));
}

/// The order-preserving key of an f32's bits, as the kernels' `psg_to_key`.
fn to_key(u: u32) -> u32 {
    u ^ (((u as i32) >> 31) as u32 | 0x8000_0000)
}

/// Bit `i` of each of 32 words, as one word (bit `m` from word `m`): a plane.
fn plane(words: &[u32; 32], i: u32) -> u32 {
    (0..32).fold(0, |p, m| p | ((words[m] >> i) & 1) << m)
}

#[test]
fn bit_planes_of_values_map_to_the_planes_of_their_keys() {
    // What the bit-sliced selection does with a column's own keys: it transposes the values'
    // bits and maps each plane (a key's bit is the value's flipped by the sign; its top bit is
    // the sign's complement), samples past B masked off. Here against transposing the keys, on
    // the values that matter to the order: both zeros, both infinities, NaNs of either sign,
    // subnormals, and bf16 values (16 bits as loaded, the keys' top 16 planes).
    let specials = [
        0.0f32,
        -0.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        -f32::NAN,
        f32::MIN_POSITIVE / 4.0,
        -f32::MIN_POSITIVE / 4.0,
        f32::MAX,
        f32::MIN,
        1.0,
        -1.5,
    ];
    let mut state = 0x9e37_79b9u32;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        state
    };
    for round in 0..64 {
        let valid = 32 - (round % 8) * 4;
        let mut bits = [0u32; 32];
        for (m, b) in bits.iter_mut().enumerate() {
            *b = if m < specials.len() && round % 2 == 0 {
                specials[(m + round) % specials.len()].to_bits()
            } else {
                next()
            };
        }
        let vm = if valid == 32 {
            !0u32
        } else {
            (1u32 << valid) - 1
        };
        let keys: [u32; 32] = std::array::from_fn(|m| if m < valid { to_key(bits[m]) } else { 0 });
        // f32: 32 planes of the values' bits.
        let sg = plane(&bits, 31);
        for i in 0..31 {
            assert_eq!(
                (plane(&bits, i) ^ sg) & vm,
                plane(&keys, i),
                "f32 plane {i}"
            );
        }
        assert_eq!(!sg & vm, plane(&keys, 31));
        // bf16: the 16 bits as loaded give the keys of their widening's top 16 planes.
        let raw: [u32; 32] = std::array::from_fn(|m| bits[m] >> 16);
        let wide: [u32; 32] =
            std::array::from_fn(|m| if m < valid { to_key(raw[m] << 16) } else { 0 });
        let sg = plane(&raw, 15);
        for i in 0..15 {
            assert_eq!(
                (plane(&raw, i) ^ sg) & vm,
                plane(&wide, i + 16),
                "bf16 plane {i}"
            );
        }
        assert_eq!(!sg & vm, plane(&wide, 31));
    }
}

#[test]
fn computed_keys_of_bf16_input_check_once_whether_the_keys_left_tie() {
    let g = generate(&mad()).unwrap();
    let bf16 = &g.cuda_tile[DType::BF16.index()];
    // The distances' selection, and only it (the median's keys are the tile's own), checks once,
    // after bit 14 (`TIE_AT`), and stops where every column's keys left tie.
    assert_eq!(bf16.matches("if (i == 14) {").count(), 1, "{bf16}");
    let check = bf16.find("if (i == 14) {").unwrap();
    assert!(
        bf16[check..].contains(
            "if (__all_sync(0xffffffffu, nl <= 2 && (left == 0 || lo == hi))) { settled = lo & ((1u << i) - 1u); stop = i; tied = true; break; }"
        ),
        "{bf16}"
    );
    // A lane selects in column c, not its own: the median it subtracts is column c's (its
    // parts, per-column values, from lane c), and the values are column c's elements of the
    // tile: the transpose's key, with those names.
    let mut names = Vec::new();
    for line in bf16[check..].lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("const auto ") {
            let (name_c, rhs) = rest.split_once(" = ").unwrap();
            let name = name_c.strip_suffix("_c").expect(line);
            assert_eq!(rhs, format!("__shfl_sync(0xffffffffu, {name}, c);"));
            names.push(name.to_string());
        }
        if line.starts_with("if (nl > 0") {
            break;
        }
    }
    assert!(!names.is_empty(), "{bf16}");
    // The key line of the check, and of the transpose before it.
    let key_line = |text: &str, last: bool| {
        let mut lines = text
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with("const psg_key key = "));
        if last {
            lines.next_back()
        } else {
            lines.next()
        }
        .expect(bf16)
        .to_string()
    };
    let mut expected = key_line(&bf16[..check], true);
    // The key of an absolute value: its argument's bits with the top bit set, one logic op.
    assert!(
        expected.starts_with("const psg_key key = psg_abs_key((x - "),
        "{expected}"
    );
    for name in &names {
        expected = expected
            .replace(&format!("{name},"), &format!("{name}_c,"))
            .replace(&format!("{name})"), &format!("{name}_c)"))
            .replace(&format!("{name} "), &format!("{name}_c "));
    }
    assert_eq!(key_line(&bf16[check..], false), expected);
    assert!(
        bf16[check..].contains("const psg_acc x = psg_tile_get(tcc[(b) << 5]);"),
        "{bf16}"
    );
    // The remaining bits then come from the check, not from the planes (nor from the tile,
    // where a lone key's come from after an early stop).
    assert!(bf16.contains("psg_key rest = settled;"), "{bf16}");
    assert!(
        bf16.contains("if (!tied && __popc(m0) + __popc(m1) == 1) {"),
        "{bf16}"
    );
    // The check's key reads the plan's names (the parameters' s0, s1, ...): the selecting
    // lanes' own declarations must not hide them.
    assert!(
        bf16.contains("const int o0 = (2 * q) ^ sw, o1 = (2 * q + 1) ^ sw;"),
        "{bf16}"
    );
    for name in ["s0", "s1"] {
        for decl in ["int", "psg_key", "auto"] {
            assert!(
                !bf16.contains(&format!(" {decl} {name} =")),
                "{decl} {name}"
            );
        }
    }
    // f32 distances rarely tie: no check (their keys are computed again from the tile only
    // for a lone key's bits after an early stop).
    let f32 = &g.cuda_tile[DType::F32.index()];
    assert!(!f32.contains("if (i == 14) {"), "{f32}");
    assert!(!f32.contains("settled"), "{f32}");
    // Nor on a column's own keys.
    let own = generate(&median()).unwrap();
    assert!(!own.cuda_tile[DType::BF16.index()].contains("tcc"));
}

#[test]
fn unsplit_selections_check_once_whether_the_keys_left_are_zeros() {
    let g = generate(&mad()).unwrap();
    for dtype in [DType::F32, DType::BF16] {
        let tile = &g.cuda_tile[dtype.index()];
        // The distances' selection (unsplit 32-bit keys), not the median's (split in f32, a
        // column's own 16-bit keys in bf16): once, after bit 22 (`ZERO_AT`), where some column
        // of the warp has tied keys of +0 or a subnormal so far.
        let gate = "if (i == 22 && __any_sync(0xffffffffu, left > 1 && (sel >> 23) == 0x100u)) {";
        let check = from_only(tile, gate);
        // One walk finds both whether a key left has a bit set below and a lone key's bits (not
        // the samples' mask: that is `some`), then the count ends as after an early stop.
        assert_in_order(
            check,
            &[
                "some |= o;",
                "if (o != 0u) rest |= 1u << j;",
                "if (__all_sync(0xffffffffu, left <= 1 || (some == 0u && rem < left))) {",
                "rest |= __shfl_xor_sync(0xffffffffu, rest, 1);",
                "if (left == 0) rest = rem >= 0 ? ((1u << i) - 1u) & ~0u : 0u;",
                "sel |= rest;",
                "break;",
            ],
        );
    }
    // A column's own 32-bit keys in a plan's only selection are split: no check there.
    let median = generate(&median()).unwrap();
    assert!(!median.cuda_tile[DType::F32.index()].contains("(sel >> 23) == 0x100u"));
}

#[test]
fn computed_keys_take_a_lone_keys_bits_from_the_tile_after_an_early_stop() {
    let g = generate(&mad()).unwrap();
    for dtype in [DType::F32, DType::BF16] {
        let tile = &g.cuda_tile[dtype.index()];
        // The distances' selection (computed keys): the lane holding the lone key computes it
        // again from the tile, with the median of the column it selects in (its parts shuffled
        // from that column's lane, outside the branch), instead of walking the remaining
        // planes.
        let end = "            if (stop > 0) {\n";
        let block = from_only(tile, end);
        let block = &block[..block.find("                sel |= rest;").expect(block)];
        assert_in_order(
            block,
            &[
                "const auto t1_c = __shfl_sync(0xffffffffu, t1, c);",
                "__popc(m0) + __popc(m1) == 1) {",
                "const psg_tile* const tcc = tc + (c - lane);",
                "const psg_key key = psg_abs_key((x - psg_select((t0_c > 0.0f)",
                "rest = key & ((1u << stop) - 1u) & ~0u;",
                "rest |= __shfl_xor_sync(0xffffffffu, rest, 1);",
            ],
        );
        assert!(!block.contains("for (int i = stop - 1;"), "{block}");
        // bf16's tie check has settled the bits where the keys left tie.
        let tied = block.contains("if (!tied && __popc(m0)");
        assert_eq!(tied, dtype == DType::BF16, "{block}");
    }
    // A column's own keys (f16's are not split) still walk the planes.
    let own = generate(&median()).unwrap();
    let f16 = &own.cuda_tile[DType::F16.index()];
    assert!(
        f16.contains("for (int i = stop - 1; i >= 0; --i) {"),
        "{f16}"
    );
    assert!(!f16.contains("tcc = tc + (c - lane)"), "{f16}");
}

#[test]
fn a_negated_negative_literal_is_not_a_decrement() {
    // `-f32::MIN` and `-(-1.5)`: printed `(--3.4028235e38f)`, C's `--` made the kernels fail to
    // compile (the CPU's Rust read it as a double negation).
    for lit in [f64::from(f32::MIN), -1.5, f64::MIN] {
        let capped = Scalar::Call(
            Func::Max,
            vec![
                Scalar::Load,
                Scalar::Unary(UnOp::Neg, Box::new(Scalar::lit(lit))),
            ],
        );
        let r = reduction(
            vec![],
            Output::Batch(Column {
                value: capped,
                keep: None,
            }),
        );
        let generated = generate(&r).unwrap();
        let texts = generated
            .cuda
            .iter()
            .chain(&generated.cuda_tile)
            .chain([&generated.rust]);
        for text in texts {
            assert!(!text.contains("(--"), "{text}");
            assert!(text.contains("(-(-"), "{text}");
        }
    }
}
