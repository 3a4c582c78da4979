//! NVRTC compiles with no GPU: CUBINs for sm_80 and sm_90, compile errors with the log, and the
//! test reductions' kernels for every dtype. Skipped (and said so) when libnvrtc is missing,
//! unless `PSG_REQUIRE_NVRTC=1`.

mod common;

use std::path::PathBuf;
use std::process::Command;

use psg_runtime::{compile_cubin, compile_ptx, nvrtc_version, supported_archs, Error};

const ELF_MAGIC: [u8; 4] = [0x7f, b'E', b'L', b'F'];

const AXPY: &str = r#"
extern "C" __global__ void axpy_f32(float a, const float* x, float* y, long long n) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = a * x[i] + y[i];
}
"#;

#[test]
fn compiles_cubins_for_sm80_and_sm90() {
    if !common::nvrtc_or_skip() {
        return;
    }
    let (major, minor) = nvrtc_version().unwrap();
    eprintln!(
        "NVRTC {major}.{minor}, archs {:?}",
        supported_archs().unwrap()
    );
    for arch in [(8, 0), (9, 0)] {
        let cubin = compile_cubin(AXPY, "axpy_f32", arch).unwrap();
        assert_eq!(cubin[..4], ELF_MAGIC, "sm_{}{}", arch.0, arch.1);
        assert!(cubin.len() > 256);
    }
}

#[test]
fn the_build_is_read_from_the_ptx_header() {
    if !common::nvrtc_or_skip() {
        return;
    }
    // What the disk cache's key holds beside (major, minor): e.g. "release 13.0, V13.0.88;
    // CL-36424714".
    let (major, minor) = nvrtc_version().unwrap();
    let build = psg_runtime::nvrtc_build().unwrap();
    assert!(
        build.starts_with(&format!("release {major}.{minor}, V{major}.{minor}.")),
        "{build}"
    );
    assert!(build.contains("; CL-"), "{build}");
}

#[test]
fn compiles_ptx_text() {
    if !common::nvrtc_or_skip() {
        return;
    }
    let ptx = compile_ptx(AXPY, "axpy_f32", (9, 0)).unwrap();
    assert!(ptx.contains(".entry axpy_f32"), "{ptx}");
    assert!(ptx.contains(".target sm_90"), "{ptx}");
}

#[test]
fn arch_is_clamped_to_what_nvrtc_supports() {
    if !common::nvrtc_or_skip() {
        return;
    }
    // A future architecture compiles for the newest one this NVRTC knows.
    let cubin = compile_cubin(AXPY, "axpy_f32", (99, 9)).unwrap();
    assert_eq!(cubin[..4], ELF_MAGIC);
    // One older than every supported architecture is a parameter error, not a panic.
    assert!(matches!(
        compile_cubin(AXPY, "axpy_f32", (3, 0)),
        Err(Error::InvalidParameter(_))
    ));
}

#[test]
fn syntax_error_returns_the_log_with_file_and_line() {
    if !common::nvrtc_or_skip() {
        return;
    }
    let bad =
        "extern \"C\" __global__ void broken(float* y) {\n    y[0] = 1.0f\n    y[1] = 2.0f;\n}\n";
    match compile_cubin(bad, "broken", (9, 0)) {
        Err(Error::Compile { kernel, log }) => {
            assert_eq!(kernel, "broken");
            // NVRTC names the source `broken.cu` and the line of the missing semicolon.
            assert!(
                log.contains("broken.cu(3)") || log.contains("broken.cu(2)"),
                "{log}"
            );
            assert!(log.contains("error"), "{log}");
        }
        other => panic!("expected Error::Compile, got {other:?}"),
    }
}

#[test]
fn source_with_a_nul_byte_is_a_parameter_error() {
    if !common::nvrtc_or_skip() {
        return;
    }
    assert!(matches!(
        compile_cubin("extern \"C\" __global__ void k() {}\0", "k", (9, 0)),
        Err(Error::InvalidParameter(_))
    ));
}

#[test]
fn every_test_reduction_kernel_compiles_for_every_dtype() {
    if !common::nvrtc_or_skip() {
        return;
    }
    for def in common::all_defs() {
        for k in &def.cuda {
            let cubin = compile_cubin(&k.source, &k.name, (9, 0))
                .unwrap_or_else(|e| panic!("{}: {e}", k.name));
            assert_eq!(cubin[..4], ELF_MAGIC);
        }
    }
}

/// The folder on LD_LIBRARY_PATH that holds libnvrtc.so.*.
fn nvrtc_dir() -> Option<PathBuf> {
    let path = std::env::var("LD_LIBRARY_PATH").ok()?;
    path.split(':').map(PathBuf::from).find(|d| {
        std::fs::read_dir(d).is_ok_and(|mut it| {
            it.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().starts_with("libnvrtc.so")))
        })
    })
}

#[test]
fn missing_builtins_library_is_a_typed_error() {
    const CHILD: &str = "PSG_TEST_BUILTINS_CHILD";
    if std::env::var_os(CHILD).is_some() {
        // In the child: libnvrtc alone is on LD_LIBRARY_PATH, its builtins library is not. The
        // status says so (it compiles an empty kernel), so that device selection does not choose
        // a GPU whose kernels could not be compiled; so does every compile.
        let status = psg_runtime::nvrtc_status();
        let compiled = compile_cubin(AXPY, "axpy_f32", (9, 0));
        match (status, compiled) {
            (
                Err(s @ Error::NvrtcBuiltinsMissing { .. }),
                Err(e @ Error::NvrtcBuiltinsMissing { .. }),
            ) => {
                for msg in [s.to_string(), e.to_string()] {
                    assert!(msg.contains("libnvrtc-builtins"), "{msg}");
                    assert!(msg.contains("nvidia-cuda-nvrtc==13.0.88"), "{msg}");
                }
                assert!(psg_runtime::nvrtc_build().is_err());
            }
            // The system's library path (ldconfig) also holds libnvrtc-builtins, so hiding it from
            // LD_LIBRARY_PATH hides nothing: this machine can't show the error.
            (Ok(()), Ok(_)) => {
                eprintln!("skipped: libnvrtc-builtins is found outside LD_LIBRARY_PATH here")
            }
            (s, c) => panic!(
                "expected NvrtcBuiltinsMissing twice, got {s:?} and {:?}",
                c.err()
            ),
        }
        return;
    }
    if !common::nvrtc_or_skip() {
        return;
    }
    let Some(dir) = nvrtc_dir() else {
        eprintln!("skipped: libnvrtc is not found through LD_LIBRARY_PATH, so it can't be copied");
        return;
    };
    // libnvrtc alone (no builtins) in a fresh folder; the same test binary runs again there.
    let alone = std::env::temp_dir().join(format!("psg-nvrtc-alone-{}", std::process::id()));
    std::fs::create_dir_all(&alone).unwrap();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let entry = entry.unwrap();
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with("libnvrtc.so")
        {
            std::fs::copy(entry.path(), alone.join(entry.file_name())).unwrap();
        }
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "missing_builtins_library_is_a_typed_error",
            "--exact",
            "--nocapture",
        ])
        .env("LD_LIBRARY_PATH", &alone)
        .env(CHILD, "1")
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&alone);
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed:\n{text}");
    assert!(text.contains("1 passed"), "{text}");
}

/// The dtype conversions' kernels (`Tensor::to_dtype`) compile for sm_75 (no `cvt.rn.bf16.f32`:
/// the software rounding), sm_80 and sm_90, each of the 12 under its own name.
#[test]
fn conversion_kernels_compile() {
    if !common::nvrtc_or_skip() {
        return;
    }
    let kernels = psg_runtime::tensor::convert_kernel_sources();
    assert_eq!(kernels.len(), 12);
    for k in kernels {
        for arch in [(7, 5), (8, 0), (9, 0)] {
            let cubin = compile_cubin(&k.source, &k.name, arch)
                .unwrap_or_else(|e| panic!("{} for sm_{}{}: {e}", k.name, arch.0, arch.1));
            assert_eq!(cubin[..4], ELF_MAGIC);
        }
    }
}
