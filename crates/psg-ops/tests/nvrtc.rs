//! Every built-in's CUDA source, for every dtype, and every hand-written kernel compiles through
//! NVRTC to CUBIN for sm_75, sm_80 and sm_90 (and as a quick build for sm_90; their builds for
//! unaligned rows for sm_75 and sm_90 and as quick builds), and the kernels held to a register
//! cap compile without local memory (no spills; a bit-sliced selection's few words at most).
//! Needs only libnvrtc (no GPU). Where libnvrtc is missing the test fails if
//! `PSG_REQUIRE_NVRTC=1` (CI sets it); otherwise it says why and checks nothing.

use psg_runtime::{compile_cubin, nvrtc_status, KernelSource, ReductionDef};

fn nvrtc_ready() -> bool {
    match nvrtc_status() {
        Ok(()) => true,
        Err(e) if std::env::var("PSG_REQUIRE_NVRTC").as_deref() == Ok("1") => {
            panic!("PSG_REQUIRE_NVRTC=1 but NVRTC is unusable: {e}")
        }
        Err(e) => {
            eprintln!("skipping the NVRTC check (NOT evidence that kernels compile): {e}");
            false
        }
    }
}

fn all_kernels() -> Vec<&'static KernelSource> {
    // Every kernel of a definition: the thread-per-column ones, and each tiled shape's.
    fn kernels_of(def: &'static ReductionDef) -> impl Iterator<Item = &'static KernelSource> {
        def.cuda.iter().chain(def.tiled.iter().flat_map(|t| {
            t.cuda.iter().chain(
                [&t.column, &t.large, &t.mid, &t.small, &t.spill]
                    .into_iter()
                    .flatten()
                    .flatten(),
            )
        }))
    }
    let mut all: Vec<&'static KernelSource> = psg_ops::builtin_reductions()
        .into_iter()
        .flat_map(kernels_of)
        .collect();
    all.extend(
        psg_ops::dp::dp_reductions()
            .into_iter()
            .flat_map(kernels_of),
    );
    all.extend(psg_ops::dp::noise_kernel_sources());
    all.extend(psg_ops::layers::layer_kernel_sources());
    all.extend(psg_ops::row_kernel_sources());
    all.extend(psg_ops::clip_kernel_sources());
    all.extend(psg_ops::gather_kernel_sources());
    all
}

#[test]
fn every_kernel_compiles_for_sm75_sm80_and_sm90() {
    // On sm_75 (Turing) large tiles take the register path instead of cp.async (sm_80 on), and
    // bf16 stores round in software (cvt.rn.bf16.f32 is an sm_80 instruction).
    if !nvrtc_ready() {
        return;
    }
    let kernels = all_kernels();
    assert!(
        kernels.len() >= 4 * 20,
        "expected every built-in in four dtypes, got {}",
        kernels.len()
    );
    assert!(
        kernels.iter().any(|k| k.source.contains("cp.async")),
        "no kernel uses cp.async"
    );
    assert!(
        kernels.iter().any(|k| k.name.contains("bf16")),
        "no bf16 kernel among them"
    );
    for arch in [(7, 5), (8, 0), (9, 0)] {
        for k in &kernels {
            let cubin = compile_cubin(&k.source, &k.name, arch)
                .unwrap_or_else(|e| panic!("{} for sm_{}{}: {e}", k.name, arch.0, arch.1));
            assert_eq!(&cubin[..4], b"\x7fELF", "{}: not a CUBIN", k.name);
        }
    }
    println!(
        "compiled {} kernels for sm_75, sm_80 and sm_90",
        kernels.len()
    );
}

/// The tiered JIT's quick builds (NVRTC's fast-compile setting) compile too, for sm_90: what a
/// kernel's first use on a Hopper GPU compiles.
#[test]
fn every_kernel_compiles_as_a_quick_build() {
    if !nvrtc_ready() {
        return;
    }
    let target = psg_runtime::CompileTarget::Cubin { sm: 90 };
    let kernels = all_kernels();
    for k in &kernels {
        let cubin = psg_runtime::jit::compile_quick(&k.source, &k.name, target)
            .unwrap_or_else(|e| panic!("{} as a quick build: {e}", k.name));
        assert_eq!(&cubin[..4], b"\x7fELF", "{}: not a CUBIN", k.name);
    }
    println!(
        "compiled {} kernels as quick builds for sm_90",
        kernels.len()
    );
}

/// The bytes of local memory (stack frame: spills, or arrays the compiler could not keep in
/// registers) a CUBIN's kernels use: the largest `EIATTR_FRAME_SIZE` (0x11) in its `.nv.info`
/// section, whose entries are `[format, attribute, size: u16, symbol: u32, value: u32]` for this
/// attribute (format 0x04, 8 bytes of data).
fn frame_size(cubin: &[u8]) -> u32 {
    let u16_at = |o: usize| u16::from_le_bytes([cubin[o], cubin[o + 1]]) as usize;
    let u32_at = |o: usize| u32::from_le_bytes(cubin[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(cubin[o..o + 8].try_into().unwrap()) as usize;
    // ELF64 section headers.
    let (shoff, shentsize, shnum, shstrndx) =
        (u64_at(0x28), u16_at(0x3a), u16_at(0x3c), u16_at(0x3e));
    let header = |i: usize| {
        let h = shoff + i * shentsize;
        (u32_at(h) as usize, u64_at(h + 0x18), u64_at(h + 0x20))
    };
    let (_, names, _) = header(shstrndx);
    let name_of = |off: usize| {
        let start = names + off;
        let end = start + cubin[start..].iter().position(|&b| b == 0).unwrap();
        std::str::from_utf8(&cubin[start..end]).unwrap()
    };
    let mut largest = None;
    for i in 0..shnum {
        let (name, off, size) = header(i);
        if name_of(name) != ".nv.info" {
            continue;
        }
        let mut at = off;
        largest = Some(0);
        while at + 4 <= off + size {
            let (format, attribute) = (cubin[at], cubin[at + 1]);
            let len = if format == 0x04 { u16_at(at + 2) } else { 0 };
            if attribute == 0x11 && format == 0x04 && len == 8 {
                largest = largest.max(Some(u32_at(at + 8)));
            }
            at += 4 + len;
        }
    }
    largest.expect("the CUBIN has no .nv.info section")
}

#[test]
fn kernels_held_to_a_register_cap_use_no_local_memory() {
    // Selecting kernels with f32 accumulators for large B are compiled with
    // `__launch_bounds__(256, 3)` (80 registers; 4 blocks and 64 registers for the kernels for
    // small B and the bit-sliced ones on bf16 columns' own keys): NVRTC meets that without
    // spilling (a spill would cost every tile local memory traffic). A kernel with a
    // dynamically indexed local array shows the check can fail.
    if !nvrtc_ready() {
        return;
    }
    let control = r#"extern "C" __global__ void psg_frame_control(float* out, int i) {
        float a[64];
        for (int j = 0; j < 64; ++j) a[j] = out[j];
        a[i & 63] += 1.0f;
        out[0] = a[(i >> 6) & 63];
    }"#;
    let cubin = compile_cubin(control, "psg_frame_control", (9, 0)).unwrap();
    let control_frame = frame_size(&cubin);
    assert!(
        control_frame >= 256,
        "the control kernel should need a stack frame, got {control_frame} bytes"
    );
    // A bit-sliced selection (`psg_transpose32`) may keep a few words in a frame: at three
    // blocks' registers, with the split keys, at most 72 bytes (the f32 MAD mean), where three
    // blocks took no more time than two without a frame (BENCHMARKS.md, "Three blocks a
    // multiprocessor"); held to two blocks, its selection loops fully unrolled (no frame when
    // unrolled by 16) took 0.94 of the time (the f32 median, H200). A larger frame would be a
    // real spill.
    let sliced = |k: &KernelSource| k.source.contains("psg_transpose32(");
    let capped: Vec<&KernelSource> = all_kernels()
        .into_iter()
        .filter(|k| {
            k.source.contains("__launch_bounds__(256, 3)")
                || k.source.contains("__launch_bounds__(256, 4)")
        })
        .collect();
    assert!(capped.len() >= 20, "only {} capped kernels", capped.len());
    // The kernels for small B are held to four blocks' registers (64).
    assert!(
        capped
            .iter()
            .any(|k| k.source.contains("__launch_bounds__(256, 4)") && k.name.ends_with("_small")),
        "no kernel held to four blocks"
    );
    assert!(
        capped.iter().any(|k| sliced(k)) && capped.iter().any(|k| !sliced(k)),
        "capped kernels should include bit-sliced ones and others"
    );
    for k in capped.iter().filter(|k| !sliced(k)) {
        let cubin = compile_cubin(&k.source, &k.name, (9, 0)).unwrap();
        assert_eq!(
            frame_size(&cubin),
            0,
            "{} uses local memory at its register cap",
            k.name
        );
    }
    let two: Vec<&KernelSource> = all_kernels()
        .into_iter()
        .filter(|k| k.source.contains("__launch_bounds__(256, 2)"))
        .collect();
    assert!(
        two.len() >= 10,
        "only {} kernels held to two blocks",
        two.len()
    );
    let all_sliced: Vec<&KernelSource> = all_kernels().into_iter().filter(|k| sliced(k)).collect();
    assert!(
        all_sliced.len() >= 20,
        "only {} bit-sliced kernels",
        all_sliced.len()
    );
    // Those at four blocks' registers (bf16 columns' own keys, half the planes) keep none.
    let mut four = 0;
    for k in all_sliced {
        let cubin = compile_cubin(&k.source, &k.name, (9, 0)).unwrap();
        let frame = frame_size(&cubin);
        let most = if k.source.contains("__launch_bounds__(256, 4)") {
            four += 1;
            0
        } else {
            80
        };
        assert!(
            frame <= most,
            "{} uses {frame} bytes of local memory (at most {most})",
            k.name
        );
    }
    assert!(four >= 8, "only {four} bit-sliced kernels at four blocks");
    // The spill kernels' rows in flight (`psg_raw`, indexed by unrolled constants) stay in
    // registers, in both builds (kept rows by `cp.async`, and every row through registers).
    // The f64 Gaussian sums' copying build is the exception: ptxas keeps 8-16 bytes a thread
    // in a frame there (their later passes hold 16 rows through an f64 `exp` each; 8 rows
    // left 8 bytes), none in the other build.
    let spill: Vec<&KernelSource> = all_kernels()
        .into_iter()
        .filter(|k| k.name.ends_with("_spill"))
        .collect();
    assert!(spill.len() >= 20, "only {} spill kernels", spill.len());
    for k in spill {
        assert!(k.source.contains("cp.async.commit_group"), "{}", k.name);
        let cubin = compile_cubin(&k.source, &k.name, (9, 0)).unwrap();
        let most = if k.name.starts_with("gaussian_weighted") && k.name.contains("_f64_") {
            16
        } else {
            0
        };
        let frame = frame_size(&cubin);
        assert!(
            frame <= most,
            "{} uses {frame} bytes of local memory",
            k.name
        );
        let gather = format!("#define PSG_GATHER 1\n{}", k.source);
        let cubin = compile_cubin(&gather, &k.name, (9, 0)).unwrap();
        assert_eq!(
            frame_size(&cubin),
            0,
            "{}'s gather build uses local memory",
            k.name
        );
    }
}

/// The second builds (for unaligned rows) of the kernels held to a register cap keep about the
/// first build's local memory: when they came (acb3745), 151 of 160 builds no more, and nine
/// of f16 kernels for large B 8-24 bytes more (`ptxas -v`, sm_90). Much more would be a spill
/// on the loads' path.
#[test]
fn unaligned_rows_builds_of_capped_kernels_stay_near_their_frames() {
    if !nvrtc_ready() {
        return;
    }
    let capped: Vec<&KernelSource> = all_kernels()
        .into_iter()
        .filter(|k| {
            k.source.contains("#if PSG_GATHER")
                && ["(256, 2)", "(256, 3)", "(256, 4)"]
                    .iter()
                    .any(|b| k.source.contains(&format!("__launch_bounds__{b}")))
        })
        .collect();
    assert!(capped.len() >= 60, "only {} capped kernels", capped.len());
    for k in capped {
        let first = frame_size(&compile_cubin(&k.source, &k.name, (9, 0)).unwrap());
        for (mode, source) in second_builds(k) {
            let second = frame_size(&compile_cubin(&source, &k.name, (9, 0)).unwrap());
            assert!(
                second <= first + 32,
                "{} with PSG_GATHER {mode}: {second} bytes of local memory, {first} in the first build",
                k.name
            );
        }
    }
}

/// The build for rows that do not start 16-byte aligned (the runtime prepends
/// `#define PSG_GATHER 1`, or `2` for 16-bit elements in rows 2-byte aligned) compiles for every
/// kernel that has one, for sm_75 and sm_90, and as a quick build for sm_90.
#[test]
fn every_unaligned_rows_build_compiles() {
    if !nvrtc_ready() {
        return;
    }
    let kernels: Vec<&KernelSource> = all_kernels()
        .into_iter()
        .filter(|k| k.source.contains("#if PSG_GATHER"))
        .collect();
    assert!(
        kernels.len() >= 4 * 20,
        "only {} kernels have a build for unaligned rows",
        kernels.len()
    );
    let mut builds = 0;
    for k in &kernels {
        for (mode, source) in second_builds(k) {
            for arch in [(7, 5), (9, 0)] {
                let cubin = compile_cubin(&source, &k.name, arch).unwrap_or_else(|e| {
                    panic!(
                        "{} with PSG_GATHER {mode} for sm_{}{}: {e}",
                        k.name, arch.0, arch.1
                    )
                });
                assert_eq!(&cubin[..4], b"\x7fELF", "{}: not a CUBIN", k.name);
            }
            // What a first launch on such rows compiles in the tiered JIT.
            let quick = psg_runtime::jit::compile_quick(
                &source,
                &k.name,
                psg_runtime::CompileTarget::Cubin { sm: 90 },
            )
            .unwrap_or_else(|e| panic!("{} with PSG_GATHER {mode} as a quick build: {e}", k.name));
            assert_eq!(&quick[..4], b"\x7fELF", "{}: not a CUBIN", k.name);
            builds += 1;
        }
    }
    println!(
        "compiled {builds} builds for unaligned rows for sm_75 and sm_90, and as quick builds"
    );
}

/// A kernel's second builds, for unaligned rows: what the runtime compiles (`PSG_GATHER` 1, and
/// 2 for 16-bit elements in rows only 2-byte aligned).
fn second_builds(k: &KernelSource) -> Vec<(u32, String)> {
    let sixteen_bit = k.name.contains("bf16") || k.name.contains("f16");
    let modes = if sixteen_bit { 1..=2 } else { 1..=1 };
    modes
        .map(|mode| (mode, format!("#define PSG_GATHER {mode}\n{}", k.source)))
        .collect()
}

/// A user's constants negated: `-f32::MIN` was printed `(--3.4028235e38f)`, C's decrement, and
/// NVRTC refused every kernel of such a reduction.
#[psg_macros::batch_reduce(crate = "psg_runtime")]
fn negated_constants(g: Batch) -> Batch {
    let m = -f32::MIN;
    g.map(|x| x.min(m).max(-(-1.5)))
}

#[test]
fn negated_negative_constants_compile() {
    if !nvrtc_ready() {
        return;
    }
    let def = &negated_constants::DEF;
    let kernels: Vec<&KernelSource> = def
        .cuda
        .iter()
        .chain(def.tiled.iter().flat_map(|t| t.cuda.iter()))
        .collect();
    assert!(kernels.len() >= 8, "{} kernels", kernels.len());
    for k in kernels {
        let cubin =
            compile_cubin(&k.source, &k.name, (9, 0)).unwrap_or_else(|e| panic!("{}: {e}", k.name));
        assert_eq!(&cubin[..4], b"\x7fELF", "{}: not a CUBIN", k.name);
    }
}
