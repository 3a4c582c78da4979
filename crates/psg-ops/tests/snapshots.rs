//! Snapshots of the generated CUDA C of every built-in (f32), of one built-in in every dtype, and
//! of one CPU implementation: a change to the code generator shows up here as a reviewed diff.

use psg_codegen::cuda_tile::{optimized_source, quick_source};
use psg_runtime::{DType, KernelSource};

#[test]
fn generated_cuda_of_every_builtin() {
    for def in psg_ops::builtin_reductions() {
        let k = &def.cuda[DType::F32.index()];
        insta::assert_snapshot!(format!("{}_f32", def.name), k.source.as_ref());
    }
}

#[test]
fn generated_tiled_cuda_of_every_builtin() {
    for def in psg_ops::builtin_reductions() {
        let tiled = def
            .tiled
            .as_ref()
            .expect("every built-in has a tiled kernel");
        let k = &tiled.cuda[DType::F32.index()];
        insta::assert_snapshot!(format!("{}_f32_tile", def.name), k.source.as_ref());
    }
}

/// bf16 tiles keep the 16-bit elements (copied as they are, widened where a pass reads them);
/// a transformed tile (the clipped median's products) stays f32; a map (`sign`) keeps no tile:
/// its streaming kernel moves 16-byte vectors through registers.
#[test]
fn generated_tiled_cuda_of_bf16() {
    for name in ["var_corrected", "scaled_median", "sign"] {
        let def = psg_ops::builtin_reductions()
            .into_iter()
            .find(|d| d.name == name)
            .expect("a built-in");
        let tiled = def.tiled.as_ref().expect("a tiled kernel");
        insta::assert_snapshot!(
            format!("{name}_bf16_tile"),
            tiled.cuda[DType::BF16.index()].source.as_ref()
        );
    }
}

/// The column-mode kernels (small B: whole columns a thread) of the built-ins that have one, in
/// bf16, and the list of those that have one.
#[test]
fn generated_column_mode_cuda() {
    let mut with = Vec::new();
    for def in psg_ops::builtin_reductions() {
        if let Some(column) = def.tiled.as_ref().and_then(|t| t.column.as_ref()) {
            with.push(def.name);
            if matches!(def.name, "var_corrected" | "zscore_mean" | "zscore_clean") {
                insta::assert_snapshot!(
                    format!("{}_bf16_cols", def.name),
                    column[DType::BF16.index()].source.as_ref()
                );
            }
        }
    }
    insta::assert_snapshot!("column_mode_reductions", with.join("\n"));
}

/// The runtime launches the column-mode kernels with the tile width the generator built them for.
#[test]
fn column_mode_tile_is_the_same_in_codegen_and_runtime() {
    assert_eq!(
        psg_codegen::cuda_tile::COLUMN_TILE_LOG2,
        psg_runtime::COLUMN_TILE_LOG2
    );
}

/// A selection's tiled kernel for large B (32-bit digit counts), and the list of built-ins that
/// have one (every one that selects).
#[test]
fn generated_large_batch_cuda() {
    let mut with = Vec::new();
    for def in psg_ops::builtin_reductions() {
        if let Some(large) = def.tiled.as_ref().and_then(|t| t.large.as_ref()) {
            with.push(def.name);
            if def.name == "median" {
                insta::assert_snapshot!(
                    "median_f32_tile_large",
                    large[DType::F32.index()].source.as_ref()
                );
            }
            if def.name == "var_corrected" {
                insta::assert_snapshot!(
                    "var_corrected_f32_tile_large",
                    large[DType::F32.index()].source.as_ref()
                );
            }
        }
    }
    insta::assert_snapshot!("large_batch_reductions", with.join("\n"));
}

/// The spill kernels (B beyond a 32-column tile: the rows that fit kept, the others read from g
/// each pass) of the var in f32 and the z-score cleaner (a per-sample output) in bf16, and the
/// list of built-ins that have one (every one of streaming passes but the one-pass plans, whose
/// streaming kernel serves any B).
#[test]
fn generated_spill_cuda() {
    let mut with = Vec::new();
    for def in psg_ops::builtin_reductions() {
        if let Some(spill) = def.tiled.as_ref().and_then(|t| t.spill.as_ref()) {
            with.push(def.name);
            for (name, dtype) in [("var_corrected", DType::F32), ("zscore_clean", DType::BF16)] {
                if def.name == name {
                    insta::assert_snapshot!(
                        format!("{name}_{}_spill", dtype.name()),
                        spill[dtype.index()].source.as_ref()
                    );
                }
            }
        }
    }
    insta::assert_snapshot!("spill_reductions", with.join("\n"));
}

/// The reductions of streaming passes over an untransformed tile pipeline their tile for large
/// B: the var, std and z-score mean in f32, bf16 and f16, the Gaussian sums in f32, and those
/// with a per-sample output (the z-score cleaner, the relative clamp) in bf16 and f16; committed a group a chunk, each chunk waited for by the first pass (in a 16-bit
/// kernel, on both its paths: two columns a thread, and one), the block never waiting for the
/// whole tile where `cp.async` copies it; elsewhere the kernel for large B is the tiled kernel
/// itself, and the kernel for B up to 256 does not pipeline.
#[test]
fn streaming_plans_pipeline_their_tile_for_large_b_only() {
    let mut pipelined = Vec::new();
    for def in psg_ops::builtin_reductions() {
        let Some(tiled) = def.tiled.as_ref() else {
            continue;
        };
        let Some(large) = tiled.large.as_ref() else {
            continue;
        };
        if tiled.mid.is_some() {
            // A selection's kernel for large B counts digits; it does not pipeline.
            for k in large {
                assert!(!k.source.contains("psg_wait_groups"), "{}", k.name);
            }
            continue;
        }
        pipelined.push(def.name);
        let dtypes: &[DType] = if def.name.starts_with("gaussian") {
            &[DType::F32]
        } else if def.name.ends_with("clean") || def.name.starts_with("clamp") {
            // A per-sample output: 16-bit tiles only.
            &[DType::BF16, DType::F16]
        } else {
            &[DType::F32, DType::BF16, DType::F16]
        };
        for &d in dtypes {
            let k = &large[d.index()];
            assert_eq!(k.name, format!("{}_{}_tile_large", def.name, d.name()));
            let src: &str = &k.source;
            // One commit a chunk and one wait a chunk in the first pass, a barrier only for
            // tiles filled another way: on each path of the kernel.
            let paths = if d == DType::F32 { 1 } else { 2 };
            let count = |what: &str| src.matches(what).count();
            assert_eq!(count("cp.async.commit_group"), paths, "{}", k.name);
            assert_eq!(
                count("psg_wait_groups(psg_groups - psg_k)"),
                paths,
                "{}",
                k.name
            );
            assert_eq!(count("if (!vec) __syncthreads();"), paths, "{}", k.name);
            let body = &src[src.find("for (long long t = blockIdx.x").unwrap()..];
            let copies: Vec<&str> = body
                .split("#if __CUDA_ARCH__ >= 800 && !PSG_GATHER\n")
                .skip(1)
                .map(|c| &c[..c.find("#el").unwrap()])
                .filter(|c| c.contains("cp.async.cg"))
                .collect();
            assert_eq!(copies.len(), paths, "{}", k.name);
            for c in copies {
                assert!(c.contains("cp.async.commit_group"), "{}", k.name);
                assert!(!c.contains("cp.async.wait_all"), "{}", k.name);
            }
            // Warp w moves the rows its passes read.
            assert!(src.contains("const int r0 = w + 8 * (lane >> per_row_log2)"));
            assert_eq!(tiled.kernel_for(d, 257).name, k.name);
            assert_eq!(tiled.kernel_for(d, 256).name, tiled.cuda[d.index()].name);
            if d == DType::BF16 {
                // With an H200's shared memory a block, B = 1500 runs 64-column tiles (two
                // columns a thread: gpu_pipelined_tiles_match_cpu), B = 2000 32-column ones (the
                // one-column path: gpu_two_columns_a_thread_match_cpu).
                let log2 = |b: usize| tiled.choose(d, b, 227 * 1024).map(|c| c.0);
                assert_eq!(
                    (log2(1500), log2(2000), log2(3000)),
                    (Some(6), Some(5), Some(5))
                );
            }
        }
        for d in DType::ALL {
            let packed = &tiled.cuda[d.index()];
            assert!(
                !packed.source.contains("psg_wait_groups"),
                "{}",
                packed.name
            );
        }
        for d in DType::ALL.into_iter().filter(|d| !dtypes.contains(d)) {
            let i = d.index();
            assert_eq!(large[i].name, tiled.cuda[i].name);
            assert_eq!(large[i].source, tiled.cuda[i].source);
            assert_eq!(tiled.kernel_for(d, 1024).name, tiled.cuda[i].name);
        }
    }
    assert_eq!(
        pipelined,
        [
            "var_corrected",
            "std_corrected",
            "gaussian_weighted",
            "gaussian_weighted_sum",
            "zscore_mean",
            "zscore_clean",
            "clamp_values_relative"
        ]
    );
}

/// The runtime runs a selecting reduction's kernel for large B, with the shared memory of its
/// digit counts, above the B where the generator's packed kernel stops (bit planes for 32-bit
/// keys, 16-bit digit counts for 64-bit ones).
#[test]
fn packed_digit_counts_end_at_the_same_batch_in_codegen_and_runtime() {
    assert_eq!(
        psg_codegen::cuda_tile::PACKED_BINS_MAX_B,
        psg_runtime::PACKED_BINS_MAX_B
    );
    let median = psg_ops::builtin_reductions()
        .into_iter()
        .find(|d| d.name == "median")
        .and_then(|d| d.tiled.clone())
        .expect("the median has a tiled kernel");
    for d in [DType::F32, DType::BF16, DType::F64] {
        let i = d.index();
        if d == DType::F64 {
            // 256 bins of 32 columns: 16 KiB more as 32-bit counts.
            assert_eq!(
                median.fixed_bytes_large[i],
                median.fixed_bytes[i] + 256 * 32 * 2
            );
        } else if d == DType::F32 {
            // 32 planes of 8 parts of 32 columns (32 KiB) where the large kernel has 256 bins
            // of 32-bit counts (32 KiB): the same, less the 16-bit counts' row a warp's header.
            assert!(
                median.fixed_bytes[i] > 32 * 1024
                    && median.fixed_bytes[i] <= median.fixed_bytes_large[i]
            );
        } else {
            // A bf16 column's own keys: only the top 16 planes (16 KiB), and no less than the
            // sorted lists of the kernel for small B (136 rows of 32 words: 17 KiB).
            assert_eq!(
                median.fixed_bytes[i] + (32 - 17) * 1024,
                median.fixed_bytes[DType::F32.index()]
            );
        }
        let below = median
            .choose(d, psg_runtime::PACKED_BINS_MAX_B, 227 * 1024)
            .unwrap();
        let above = median
            .choose(d, psg_runtime::PACKED_BINS_MAX_B + 1, 227 * 1024)
            .unwrap();
        let per = median.bytes_per_element[i];
        let tile = |log2: u32| (psg_runtime::PACKED_BINS_MAX_B as u32) << log2;
        assert_eq!(below.1, tile(below.0) * per + median.fixed_bytes[i]);
        assert_eq!(
            above.1,
            (tile(above.0) + (1 << above.0)) * per + median.fixed_bytes_large[i]
        );
        let at = psg_runtime::PACKED_BINS_MAX_B;
        assert!(median.kernel_for(d, at).name.ends_with("_tile"));
        // From the kernel for small B's last B up to the packed kernel, the kernel for middling
        // B, with the packed kernel's shared memory.
        let tile = |b: usize, log2: u32| (b as u32) << log2;
        for b in [psg_runtime::SMALL_MAX_B + 1, psg_runtime::MID_MAX_B] {
            assert!(median.kernel_for(d, b).name.ends_with("_tile_mid"));
            let mid = median.choose(d, b, 227 * 1024).unwrap();
            assert_eq!(mid.1, tile(b, mid.0) * per + median.fixed_bytes[i]);
        }
        let first = psg_runtime::MID_MAX_B + 1;
        assert!(median.kernel_for(d, first).name.ends_with("_tile"));
        let packed = median.choose(d, first, 227 * 1024).unwrap();
        assert_eq!(
            packed.1,
            tile(first, packed.0) * per + median.fixed_bytes[i]
        );
        let large = median.kernel_for(d, at + 1);
        assert!(large.name.ends_with("_tile_large"));
        assert!(large
            .source
            .contains("atomicAdd((int*)(hist + ((int)d << 7)), 1);"));
        let packed = if d == DType::F64 {
            "1 << (((int)d & 1) << 4)"
        } else {
            "psg_transpose32(pl);"
        };
        assert!(median.kernel_for(d, at).source.contains(packed));
    }
    // A reduction that does not select has one tiled kernel for every B.
    let mean = psg_ops::builtin_reductions()
        .into_iter()
        .find(|d| d.name == "mean")
        .and_then(|d| d.tiled.clone())
        .expect("the mean has a tiled kernel");
    assert!(mean.large.is_none());
    assert_eq!(mean.fixed_bytes, mean.fixed_bytes_large);
    assert!(mean.kernel_for(DType::F32, 4096).name.ends_with("_tile"));
}

/// A selection's tiled kernel for small B (whole columns sorted in a warp), which the runtime
/// runs up to the B the generator built it for, with the shared memory of the packed kernel.
#[test]
fn small_batch_kernels_end_at_the_same_batch_in_codegen_and_runtime() {
    assert_eq!(
        psg_codegen::cuda_tile::SMALL_MAX_B,
        psg_runtime::SMALL_MAX_B
    );
    let mut with = Vec::new();
    for def in psg_ops::builtin_reductions() {
        let Some(tiled) = def.tiled.as_ref() else {
            continue;
        };
        // Exactly the reductions with a kernel for middling B (every one that selects), each
        // with one for large B too.
        assert_eq!(tiled.small.is_some(), tiled.mid.is_some(), "{}", def.name);
        assert!(
            tiled.large.is_some() || tiled.small.is_none(),
            "{}",
            def.name
        );
        let Some(small) = tiled.small.as_ref() else {
            continue;
        };
        with.push(def.name);
        for d in DType::ALL {
            let at = psg_runtime::SMALL_MAX_B;
            let k = tiled.kernel_for(d, at);
            assert!(k.name.ends_with("_tile_small"), "{}", k.name);
            assert_eq!(k.source, small[d.index()].source);
            assert!(k.source.contains("psg_group_sort<8>(a, q);"));
            // (The quick build's selections count digits: see `quick_builds_count_digits`.)
            assert!(
                !optimized_source(&k.source).contains("atomicAdd((int*)(hist"),
                "{}: no digit counts",
                k.name
            );
            assert!(tiled.kernel_for(d, 1).name.ends_with("_tile_small"));
            // Then the kernel for middling B up to the packed one's first B.
            assert!(tiled.kernel_for(d, at + 1).name.ends_with("_tile_mid"));
            let first = psg_runtime::MID_MAX_B + 1;
            assert!(tiled.kernel_for(d, first - 1).name.ends_with("_tile_mid"));
            assert!(tiled.kernel_for(d, first).name.ends_with("_tile"));
        }
        if def.name == "median" {
            insta::assert_snapshot!(
                "median_f32_tile_small",
                small[DType::F32.index()].source.as_ref()
            );
        }
    }
    // Every order statistic, outlier rule and clipped median that selects.
    for name in [
        "median",
        "median_low",
        "quantile_q",
        "kth_smallest",
        "mad_mean",
        "trim_mean",
    ] {
        assert!(
            with.contains(&name),
            "{name} has no kernel for small B: {with:?}"
        );
    }
}

/// A selection's tiled kernel for middling B (bit planes of four parts a column), which the
/// runtime runs from the kernel for small B's last B up to the B the generator built it for;
/// on 64-bit keys it is the packed kernel (digit counts) under its own name.
#[test]
fn middling_batch_kernels_end_at_the_same_batch_in_codegen_and_runtime() {
    assert_eq!(psg_codegen::cuda_tile::MID_MAX_B, psg_runtime::MID_MAX_B);
    let mut with = 0;
    for def in psg_ops::builtin_reductions() {
        let Some(tiled) = def.tiled.as_ref() else {
            continue;
        };
        assert!(tiled.large.is_some() || tiled.mid.is_none(), "{}", def.name);
        let Some(mid) = tiled.mid.as_ref() else {
            continue;
        };
        with += 1;
        for d in DType::ALL {
            let k = &mid[d.index()];
            assert!(k.name.ends_with("_tile_mid"), "{}", k.name);
            let packed = &tiled.cuda[d.index()];
            if d == DType::F64 {
                assert_eq!(
                    k.source.replace(k.name.as_ref(), "K"),
                    packed.source.replace(packed.name.as_ref(), "K")
                );
            } else {
                // Four warps transpose, lanes of two select a column (one shuffle a bit).
                assert!(k.source.contains("if (w < 4) {\n"), "{}", k.name);
                assert!(k.source.contains("samples w + 4m"), "{}", k.name);
                assert!(
                    k.source
                        .contains("const int c = 16 * (w & 1) + (lane >> 1), q = lane & 1;"),
                    "{}",
                    k.name
                );
                assert!(!k.source.contains("c0, 2);"), "{}", k.name);
                assert!(packed.source.contains("c0, 2);"), "{}", packed.name);
            }
        }
        if def.name == "median" {
            insta::assert_snapshot!(
                "median_f32_tile_mid",
                mid[DType::F32.index()].source.as_ref()
            );
        }
    }
    assert!(
        with >= 6,
        "every selecting built-in has a kernel for middling B"
    );
}

#[test]
fn generated_cuda_of_median_in_every_dtype() {
    let def = psg_ops::builtin_reductions()
        .into_iter()
        .find(|d| d.name == "median")
        .expect("median is a built-in");
    for d in [DType::F64, DType::F16, DType::BF16] {
        insta::assert_snapshot!(
            format!("median_{}", d.name()),
            def.cuda[d.index()].source.as_ref()
        );
    }
}

#[test]
fn kernel_names_are_op_and_dtype() {
    for def in psg_ops::builtin_reductions() {
        for d in DType::ALL {
            assert_eq!(
                def.cuda[d.index()].name,
                format!("{}_{}", def.name, d.name())
            );
        }
    }
}

/// Two selections of one wave on a column's own keys (a trimmed mean's bounds) share one set of
/// bit planes, the second selected by the warps that would otherwise wait; a selection that
/// reads another's result (the MAD's second median) keeps planes of its own.
#[test]
fn a_trimmed_means_bounds_share_one_set_of_bit_planes() {
    let trim = tiled("trim_mean");
    let mad = tiled("mad_mean");
    for d in [DType::F32, DType::BF16, DType::F16] {
        let mid = &trim.mid.as_ref().expect("a kernel for middling B")[d.index()];
        for k in [&trim.cuda[d.index()], mid] {
            assert_eq!(
                optimized_source(&k.source)
                    .matches("psg_transpose32(pl);")
                    .count(),
                1,
                "{}",
                k.name
            );
            assert!(
                k.source
                    .contains("const int kk = pick[(second ? 0 : 64) + c];"),
                "{}",
                k.name
            );
        }
        let k = &mad.cuda[d.index()];
        assert_eq!(
            optimized_source(&k.source)
                .matches("psg_transpose32(pl);")
                .count(),
            2,
            "{}",
            k.name
        );
        assert!(!k.source.contains("paired selection"), "{}", k.name);
    }
}

/// Every selection of every selecting kernel (B small, middling, up to 256 and above; every
/// dtype) has a quick form, and the quick build compiles only that: digits counted in
/// shared memory and found by one thread a column, no bit planes, sorts, gathered buckets,
/// split keys or passes unrolled whole (its source is what NVRTC's quick build takes its time
/// over). The optimized build never sees it.
#[test]
fn quick_builds_count_digits() {
    for def in psg_ops::builtin_reductions() {
        if let Some(tiled) = def.tiled.as_ref().filter(|t| t.mid.is_none()) {
            // Nothing of a plan without a selection is quick-only but the flag that computes
            // sections once a block, false in a quick build.
            let src = &tiled.cuda[0].source;
            assert_eq!(
                src.matches("PSG_QUICK").count(),
                src.matches("#if defined(PSG_QUICK)\n    const bool once = false;\n#else\n")
                    .count(),
                "{}",
                def.name
            );
        }
    }
    let kernels = selecting_kernels();
    assert!(kernels.len() >= 6 * 4 * 4, "{}", kernels.len());
    for k in &kernels {
        let src: &str = &k.source;
        let quick = quick_source(src);
        // The kernel's body (the helpers before it are compiled only where called).
        let quick = &quick[quick.find("__global__").unwrap_or(0)..];
        // A pass unrolled whole where B = 256 is left out of the quick build, too.
        let whole = src
            .matches("#if defined(PSG_QUICK)\n    {\n#else\n")
            .count();
        let selections = src.matches("#if defined(PSG_QUICK)").count() - whole;
        assert!(selections >= 1, "{}", k.name);
        // One digit loop a selection (two for a paired one).
        let loops = quick.matches("for (int shift = ").count();
        assert!(loops >= selections && loops <= 2 * selections, "{}", k.name);
        assert_eq!(
            quick
                .matches("asm volatile(\"red.shared.add.u32 [%0], %1;\"")
                .count(),
            loops,
            "{}",
            k.name
        );
        for absent in [
            "psg_transpose32(pl",
            "psg_group_sort<",
            "psg_warp_sort",
            "their top 16 bits",
            "for (;;)",
            // Gathered buckets (not `psg_gather`, the loads of unaligned rows).
            "if (gather)",
            "unrolled whole",
        ] {
            assert!(!quick.contains(absent), "{}: {absent}", k.name);
        }
        assert!(!optimized_source(src).contains("PSG_QUICK"), "{}", k.name);
        assert!(
            !optimized_source(src).contains("for (int shift = "),
            "{}",
            k.name
        );
    }
}

/// Every kernel of every selecting built-in (those with a kernel for large B): B small,
/// middling, up to 256 and above, every dtype.
fn selecting_kernels() -> Vec<KernelSource> {
    tiled_kernels(true)
}

/// Every tiled kernel (for every B, the column-mode ones too) of the built-ins, or of the
/// selecting ones.
fn tiled_kernels(selecting: bool) -> Vec<KernelSource> {
    let mut kernels = Vec::new();
    for def in psg_ops::builtin_reductions() {
        let Some(tiled) = def.tiled.as_ref().filter(|t| !selecting || t.mid.is_some()) else {
            continue;
        };
        let variants = [
            Some(&tiled.cuda),
            tiled.large.as_ref(),
            tiled.mid.as_ref(),
            tiled.small.as_ref(),
            tiled.column.as_ref(),
        ];
        kernels.extend(variants.into_iter().flatten().flatten().cloned());
    }
    kernels
}

/// A bit-sliced selection on 32-bit keys of f32 input splits them (top 16 bits to planes, low
/// 16 as they are) in the optimized build, not in the quick one; of a plan's two selections,
/// only the first on the column's own keys (the MAD's median, not its distances); never a bf16
/// column's own keys (16 bits), nor keys of bf16 input (ties).
#[test]
fn bit_sliced_selections_split_their_keys_in_optimized_builds_only() {
    let split = "their top 16 bits";
    for name in [
        "median",
        "quantile_q",
        "kth_smallest",
        "trim_mean",
        "median_low",
    ] {
        let t = tiled(name);
        let mid = &t.mid.as_ref().expect("a kernel for middling B")[DType::F32.index()];
        for k in [&t.cuda[DType::F32.index()], mid] {
            assert!(optimized_source(&k.source).contains(split), "{}", k.name);
            assert!(
                !optimized_source(&k.source).contains("PSG_QUICK"),
                "{}",
                k.name
            );
            // The quick build's selection counts digits (see `quick_builds_count_digits`).
            assert!(!quick_source(&k.source).contains(split), "{}", k.name);
        }
        assert!(
            !tiled(name).cuda[DType::BF16.index()].source.contains(split),
            "{name}"
        );
    }
    // The MAD's first selection (a column's own keys) splits, its second (distances) not.
    for name in ["mad_mean", "mad_clean"] {
        let k = &tiled(name).cuda[DType::F32.index()];
        assert_eq!(
            optimized_source(&k.source).matches(split).count(),
            1,
            "{}",
            k.name
        );
        let k = &tiled(name).cuda[DType::BF16.index()];
        assert!(!k.source.contains(split), "{}", k.name);
    }
}

/// The tiled kernels of the built-in `name`.
fn tiled(name: &str) -> psg_runtime::TiledKernels {
    psg_ops::builtin_reductions()
        .iter()
        .find(|d| d.name == name)
        .and_then(|d| d.tiled.clone())
        .expect("a built-in with tiled kernels")
}

/// The trimmed mean's counts at or below its lower bound and below its upper one come from its
/// paired bit-sliced selection in the kernel for B up to 256: its last pass then sums only,
/// where every column of the block has them (no NaN, no bound a zero of the wrong sign). Not in
/// the kernel for middling B, which was slower so.
#[test]
fn the_trimmed_mean_counts_its_bounds_in_the_selection_for_b_up_to_256() {
    let t = tiled("trim_mean");
    let mid = t.mid.as_ref().expect("a kernel for middling B");
    for d in [DType::F32, DType::BF16] {
        let k = &t.cuda[d.index()].source;
        assert!(k.contains("pick[64 + c] = (kk - rem) | (eq << 16);"), "{k}");
        assert!(k.contains("pick[c] = (kk - rem) | (eq << 16);"), "{k}");
        assert!(k.contains("if (t1_cnt && t2_cnt) {"), "{k}");
        assert!(
            k.contains("prefix != psg_to_key(-(psg_acc)0)")
                && k.contains("prefix2 != psg_to_key((psg_acc)0)"),
            "{k}"
        );
        // The counting pass runs where they are not settled: three reductions there, one here
        // (each pass twice: unrolled whole where B = 256, and the loop for the rest).
        assert_eq!(k.matches("if ((x <= l1_lo)) {").count(), 2, "{k}");
        assert_eq!(k.matches("t5_p[0] += x;").count(), 4, "{k}");
        let m = &mid[d.index()].source;
        assert!(!m.contains("_cnt"), "{m}");
    }
}

/// The MAD's distances in the kernel for small B: where the median's sorted lists are still
/// there, one bitonic merge of the distances along them (falling, then rising) instead of a
/// gathering and a second sort, which stay for blocks where they are not; no other built-in
/// carries the merge, not even the MAD's cleaner, whose registers it overflowed.
#[test]
fn the_mads_distances_are_merged_off_the_medians_sorted_lists_for_small_b() {
    let small = tiled("mad_mean").small.expect("a kernel for small B");
    for d in DType::ALL {
        let k = optimized_source(&small[d.index()].source);
        assert!(
            k.contains("void psg_group_merge(psg_key (&a)[R], int q)"),
            "{k}"
        );
        // Once for lists of up to 32 keys, once for up to 64.
        assert_eq!(k.matches("psg_group_merge<4>(a, q);").count(), 1, "{k}");
        assert_eq!(k.matches("psg_group_merge<8>(a, q);").count(), 1, "{k}");
        // Only where the median's lists are there (its NaN guard and its next value's pass
        // settled) and every column's median is finite.
        assert!(
            k.contains(
                "const bool merged = (t1_clean && t1_next) && \
                 __syncthreads_and(!active || psg_isfinite(l0_med));"
            ),
            "{k}"
        );
        assert!(k.contains("if (merged) {"), "{k}");
        // The median's sort and the distances' fallback sort, each for both list sizes.
        assert_eq!(k.matches("psg_group_sort<8>(a, q);").count(), 2, "{k}");
    }
    for name in [
        "mad_clean",
        "median",
        "trim_mean",
        "quantile_q",
        "kth_smallest",
    ] {
        for k in tiled(name).small.expect("a kernel for small B").iter() {
            assert!(!k.source.contains("psg_group_merge"), "{}", k.name);
        }
    }
}

/// The trimmed mean's two bounds in the kernel for small B: one sort of each column, both keys
/// read off the sorted list (a sort a bound before), and one NaN check for both.
#[test]
fn the_trimmed_mean_sorts_each_column_once_for_small_b() {
    let t = tiled("trim_mean");
    let small = t.small.as_ref().expect("a kernel for small B");
    for d in [DType::F32, DType::BF16] {
        let k = optimized_source(&small[d.index()].source);
        // Once for lists of up to 32 keys, once for up to 64.
        assert_eq!(k.matches("psg_group_sort<4>(a, q);").count(), 1, "{k}");
        assert_eq!(k.matches("psg_group_sort<8>(a, q);").count(), 1, "{k}");
        assert_eq!(k.matches("found[32 + c] = list[r2];").count(), 2, "{k}");
        assert!(
            k.contains("t2 = valid2 ? psg_from_key(prefix2) : psg_nan();"),
            "{k}"
        );
        assert_eq!(k.matches("__syncthreads_and(").count(), 1, "{k}");
        // The quick build selects the second bound by its own digit passes.
        let q = quick_source(&small[d.index()].source);
        assert!(
            q.contains("const bool valid2 = k2 >= 0 && k2 < total;"),
            "{q}"
        );
    }
}

#[test]
fn bit_sliced_kernels_run_two_blocks_on_whole_planes_of_one_selection_four_on_half_planes() {
    let bounds = |k: &KernelSource| {
        ["2", "3", "4"]
            .into_iter()
            .find(|n| k.source.contains(&format!("__launch_bounds__(256, {n})")))
            .unwrap_or("none")
    };
    let half = "(psg_key*)bins - (16 << 8)";
    for name in ["median", "quantile_q", "kth_smallest", "median_low"] {
        let t = tiled(name);
        let mid = t.mid.as_ref().expect("a kernel for middling B");
        let (f32_tile, bf16_tile) = (&t.cuda[DType::F32.index()], &t.cuda[DType::BF16.index()]);
        // f32 keys fill the 32 planes: two blocks and the L1 cache they leave.
        assert_eq!(bounds(f32_tile), "2", "{}", f32_tile.name);
        assert!(!f32_tile.source.contains(half), "{}", f32_tile.name);
        assert!(
            f32_tile.source.contains("uint4 pf[8];"),
            "{}",
            f32_tile.name
        );
        // A bf16 column's own keys: half the planes, four blocks, and 4 vectors prefetched
        // (no frame at 64 registers).
        assert_eq!(bounds(bf16_tile), "4", "{}", bf16_tile.name);
        assert!(bf16_tile.source.contains(half), "{}", bf16_tile.name);
        assert!(
            bf16_tile.source.contains("uint4 pf[4];"),
            "{}",
            bf16_tile.name
        );
        // The kernel for middling B: three blocks on whole planes, four on half.
        assert_eq!(
            bounds(&mid[DType::F32.index()]),
            "3",
            "{}",
            mid[DType::F32.index()].name
        );
        let bf16_mid = &mid[DType::BF16.index()];
        assert_eq!(bounds(bf16_mid), "4", "{}", bf16_mid.name);
        assert!(bf16_mid.source.contains(half), "{}", bf16_mid.name);
    }
    // Plans of two selections run three blocks, but on half planes (the bf16 trimmed mean's
    // bounds); the MAD's distances are not a column's own keys, so its planes are whole.
    for name in ["trim_mean", "mad_mean"] {
        for d in [DType::F32, DType::BF16] {
            let k = &tiled(name).cuda[d.index()];
            let want = name == "trim_mean" && d == DType::BF16;
            assert_eq!(bounds(k), if want { "4" } else { "3" }, "{}", k.name);
            assert_eq!(k.source.contains(half), want, "{}", k.name);
            // The early stop: on 32-bit keys only (a bf16 column's own 16 bits rarely part
            // before the last).
            let stops = k.source.contains("__all_sync(0xffffffffu, left <= 1)");
            assert_eq!(stops, !want, "{}", k.name);
        }
    }
}

/// A selecting kernel computes the lets and ranks that depend on the parameters and B alone once,
/// before its persistent loop: no rank is converted to an integer inside it, in any kernel of
/// any selecting built-in, quick or optimized.
#[test]
fn ranks_of_the_parameters_and_b_are_computed_once() {
    let kernels = selecting_kernels();
    assert!(kernels.len() >= 6 * 4 * 4, "{}", kernels.len());
    for k in &kernels {
        let src: &str = &k.source;
        let start = src
            .find("for (long long t = blockIdx.x")
            .expect("persistent loop");
        let (before, inside) = src.split_at(start);
        assert!(before.contains("const long long psg_rank"), "{}", k.name);
        assert!(!inside.contains("psg_index("), "{}", k.name);
        assert!(
            inside.contains("const long long k = psg_rank"),
            "{}",
            k.name
        );
    }
    // The trimmed mean's count of the samples kept (a let of B and its parameter) too.
    let t = &tiled("trim_mean").cuda[DType::F32.index()].source;
    let start = t
        .find("for (long long t = blockIdx.x")
        .expect("persistent loop");
    assert!(t[..start].contains("const auto l6_kept = "), "{t}");
    assert!(!t[start..].contains("const auto l6_kept = "), "{t}");
}

/// In the kernel for B up to 256, a plan whose selections are one wave (median, trimmed mean)
/// unrolls its passes whole where B = 256, in the optimized build only; not the MAD (a pass
/// between its selections), nor the kernel for middling B. The MAD's kernels prefetch 6
/// vectors a thread (the trimmed mean's, 7).
#[test]
fn passes_are_unrolled_whole_at_b_256_where_one_wave_selects() {
    let whole = "if (n_bi == 256) {\n        // Every sample exists: 32 a thread, unrolled whole.";
    for name in ["median", "trim_mean", "mad_mean"] {
        let t = tiled(name);
        for d in [DType::F32, DType::BF16] {
            let k = &t.cuda[d.index()].source;
            assert_eq!(
                optimized_source(k).contains(whole),
                name != "mad_mean",
                "{name}"
            );
            assert!(!quick_source(k).contains("unrolled whole"), "{name}");
            let mid = &t.mid.as_ref().expect("a kernel for middling B")[d.index()].source;
            assert!(!mid.contains("unrolled whole"), "{name}");
        }
    }
    for (name, vectors) in [("mad_mean", 6), ("mad_clean", 6), ("trim_mean", 7)] {
        let k = &tiled(name).cuda[DType::F32.index()].source;
        assert!(k.contains(&format!("uint4 pf[{vectors}];")), "{name}");
    }
}

/// Every tiled kernel has a build for rows that do not start 16-byte aligned (`PSG_GATHER`,
/// which the runtime defines for them): selecting kernels do not load the next tile ahead in it,
/// the others do; f32 and f64 tiles are filled an element a thread in it, 16-bit tiles from
/// gathered vectors; and the rows `cp.async` copies go through registers in it, but for f32 and
/// f64 tiles of kernels that do not load ahead, whose elements it copies.
#[test]
fn tiled_kernels_have_a_build_for_unaligned_rows() {
    let mut seen = [0usize; 2];
    for k in &tiled_kernels(false) {
        let src: &str = &k.source;
        assert!(
            src.contains("#ifndef PSG_GATHER\n#define PSG_GATHER 0\n#endif\n"),
            "{}",
            k.name
        );
        // A selection's digit loops are the quick build's (beside the sections' flag).
        let selects = src.matches("#if defined(PSG_QUICK)").count()
            > src
                .matches("#if defined(PSG_QUICK)\n    const bool once = false;")
                .count();
        let ahead = format!("#define PSG_GATHER_AHEAD {}\n", u8::from(!selects));
        assert!(src.contains(&ahead), "{}: {ahead}", k.name);
        seen[usize::from(selects)] += 1;
        let scalar = k.name.contains("_f32") || k.name.contains("_f64");
        let tile = src.contains("#define PSG_FETCH(");
        assert_eq!(
            src.contains("pe[u] = *src;"),
            scalar && tile,
            "{}: element fill",
            k.name
        );
        if tile {
            assert!(src.contains("PSG_LOADV(src, col)"), "{}", k.name);
            // Nothing is fetched ahead where the build does not load ahead, and then every
            // group of the tile, the first too, is fetched as the tile is filled.
            for ahead in ["PSG_FETCH(blockIdx.x, 0)", "PSG_FETCH(t + gridDim.x, 0)"] {
                for (at, _) in src.match_indices(ahead) {
                    let line = &src[src[..at].rfind('\n').unwrap()..at];
                    assert!(line.contains("vec && PSG_AHEAD"), "{}: {line}", k.name);
                }
            }
            if src.contains("if (row > 0") {
                assert!(
                    src.contains("if (row > 0 || !PSG_AHEAD) PSG_FETCH(t, row);"),
                    "{}",
                    k.name
                );
            }
        } else {
            // The streaming kernel's rows.
            assert!(
                src.contains("raw[u] = PSG_LOADV(g + (long long)b * n_p + pv, pv);"),
                "{}",
                k.name
            );
        }
        // Rows past the prefetched ones that the first build copies raw, and a pass rewrites,
        // are rewritten as they are stored in the second.
        if src.contains("psg_raw_from") {
            assert!(
                src.contains("#if __CUDA_ARCH__ >= 800 && !PSG_GATHER\n    const int psg_raw_from"),
                "{}",
                k.name
            );
        }
        // Element copies only in the second build of a kernel that does not load ahead.
        for copy in src.match_indices("cp.async.ca") {
            let before = &src[..copy.0];
            let guard = before.rfind("#elif __CUDA_ARCH__ >= 800").unwrap();
            assert!(
                before[guard..].starts_with("#elif __CUDA_ARCH__ >= 800 && !PSG_GATHER_AHEAD"),
                "{}: element copies where the second build loads ahead",
                k.name
            );
            assert!(scalar, "{}: element copies", k.name);
        }
        for async_copy in src.match_indices("cp.async.cg") {
            let before = &src[..async_copy.0];
            let guard = before.rfind("#if __CUDA_ARCH__ >= 800").unwrap();
            assert!(
                before[guard..].starts_with("#if __CUDA_ARCH__ >= 800 && !PSG_GATHER"),
                "{}: cp.async in the build for unaligned rows",
                k.name
            );
        }
    }
    assert!(seen[0] >= 40 && seen[1] >= 40, "{seen:?}");
}
