//! What a kernel is (`KernelSource`), what NVRTC compiles it for (`CompileTarget`), and the two
//! public compile entry points. They need only libnvrtc, no GPU, so CI compiles every kernel.

use std::borrow::Cow;
use std::fmt;

use crate::error::{Error, Result};
use crate::nvrtc::{compile_program, supported_archs};

/// A CUDA C kernel: the `extern "C" __global__` function's name and the source that defines it.
///
/// The source must need nothing but libnvrtc (no `#include` of toolkit headers).
/// [`KernelSource::new_static`] builds one in a `static`; [`KernelSource::new_owned`] takes text
/// made at run time.
///
/// A device finds a static kernel among its loaded ones by the text's address (free); an owned
/// one by a hash of its text, computed at each launch (about a nanosecond a byte). For a kernel
/// launched in a hot loop, prefer static text.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KernelSource {
    /// The `extern "C" __global__` function's name.
    pub name: Cow<'static, str>,
    /// The CUDA C source.
    pub source: Cow<'static, str>,
}

impl KernelSource {
    /// A kernel from static text (usable in a `static` or `const`).
    pub const fn new_static(name: &'static str, source: &'static str) -> Self {
        KernelSource {
            name: Cow::Borrowed(name),
            source: Cow::Borrowed(source),
        }
    }

    /// A kernel from text made at run time.
    pub fn new_owned(name: impl Into<String>, source: impl Into<String>) -> Self {
        KernelSource {
            name: Cow::Owned(name.into()),
            source: Cow::Owned(source.into()),
        }
    }
}

/// What NVRTC produces for a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CompileTarget {
    /// A CUBIN for the real architecture `sm_<sm>` (e.g. 90 for sm_90).
    Cubin {
        /// `10 * major + minor`.
        sm: u32,
    },
    /// PTX for the virtual architecture `compute_<compute>`, which the driver compiles on load:
    /// the fallback for a device newer (in major version) than this NVRTC knows.
    Ptx {
        /// `10 * major + minor`.
        compute: u32,
    },
}

impl CompileTarget {
    /// The target's name as NVRTC spells it: `sm_90` or `compute_120`.
    pub fn arch_name(self) -> String {
        match self {
            CompileTarget::Cubin { sm } => format!("sm_{sm}"),
            CompileTarget::Ptx { compute } => format!("compute_{compute}"),
        }
    }

    /// Whether the image is a CUBIN (else PTX).
    pub fn is_cubin(self) -> bool {
        matches!(self, CompileTarget::Cubin { .. })
    }

    /// The full NVRTC option list for this target. `--fmad=false`: arithmetic rounds the same on
    /// the GPU as on the CPU; kernels fuse explicitly with `fma` where they want it.
    pub fn options(self) -> Vec<String> {
        vec![
            format!("--gpu-architecture={}", self.arch_name()),
            "--fmad=false".to_string(),
            "--std=c++17".to_string(),
        ]
    }

    /// The options of a quick build: [`CompileTarget::options`] plus NVRTC's fast-compile
    /// setting, `--Ofast-compile=max`, which skips most optimization (loop unrolling among it:
    /// small arrays stay in local memory, no helper is inlined). The kernel computes the same
    /// bits (the same rounding options), 10 to 200 times more slowly; it compiles two to five
    /// times faster. (Where NVRTC lacks the option, the quick compile fails and the tiered JIT
    /// compiles the optimized build instead.)
    ///
    /// Not `mid`: NVRTC 13.0 keeps some of that level's state for the rest of the process, and
    /// every later optimized compile there (of a selection kernel, say) comes out different
    /// (a few bytes of local memory where there were none); `max` leaves later compiles as they
    /// were (`psg-ops/tests/nvrtc_quick_state.rs` checks it).
    ///
    /// `PSG_QUICK` is defined: where a kernel's source has a shorter way to the same result
    /// (each selection's digit count, in `psg-codegen`'s `cuda_tile.rs`), the quick build takes
    /// it: ptxas, which takes most of a quick compile, takes time in step with the code.
    pub fn quick_options(self) -> Vec<String> {
        let mut o = self.options();
        o.push("--Ofast-compile=max".to_string());
        o.push("-DPSG_QUICK".to_string());
        o
    }
}

/// How a CUDA device compiles a kernel that neither its memory cache nor the disk cache holds
/// (the default is [`JitMode::Tiered`]; `PSG_JIT` sets it for new device handles,
/// [`crate::CudaDevice::set_jit_mode`] for one handle).
///
/// An optimized build of a selection kernel takes NVRTC up to about 1.6 s; a quick build, a
/// fifth to a half of that (H100 host). Tiered compiling gives the first calls the quick build
/// and every later call the optimized one once it is ready, so a kernel's first use waits for
/// the quick compile only. Only optimized builds are written to the disk cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum JitMode {
    /// Compile a quick build and use it at once, and compile the optimized build on a
    /// background thread; launches switch to it when it is ready (and
    /// [`crate::CudaDevice::finish_compiles`] waits for it). Where NVRTC cannot build quickly
    /// (a PTX target; an NVRTC without `--Ofast-compile`) the optimized build is compiled at
    /// once.
    /// `PSG_JIT=tiered`.
    #[default]
    Tiered,
    /// Compile the optimized build and wait for it: every launch runs the optimized kernel (what
    /// benchmarks and the GPU tests use). `PSG_JIT=optimized`.
    Optimized,
    /// Compile quick builds only, never the optimized ones: the shortest start for a process
    /// that launches each kernel a few times (and a way to test the quick builds).
    /// `PSG_JIT=quick`.
    Quick,
}

impl JitMode {
    /// The mode `PSG_JIT` asks for (`tiered`, `optimized` or `quick`, any case; unset or empty:
    /// tiered), or an error saying what it may hold.
    pub fn from_env() -> Result<JitMode> {
        JitMode::parse(crate::device::env_text("PSG_JIT")?.as_deref())
    }

    fn parse(value: Option<&str>) -> Result<JitMode> {
        let v = value
            .map(|v| v.trim().to_ascii_lowercase())
            .unwrap_or_default();
        match v.as_str() {
            "" | "tiered" => Ok(JitMode::Tiered),
            "optimized" => Ok(JitMode::Optimized),
            "quick" => Ok(JitMode::Quick),
            _ => Err(Error::InvalidParameter(format!(
                "PSG_JIT={v:?} is not one of tiered, optimized, quick; unset it for tiered \
                 compiling (a quick build first, the optimized one in the background)"
            ))),
        }
    }
}

impl fmt::Display for CompileTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.arch_name())
    }
}

fn arch_code((major, minor): (u32, u32)) -> u32 {
    major.saturating_mul(10).saturating_add(minor)
}

/// The highest of `supported` that is at most `arch`; an error if `arch` is older than them all.
pub fn clamp_arch(arch: (u32, u32), supported: &[u32]) -> Result<u32> {
    let want = arch_code(arch);
    supported
        .iter()
        .copied()
        .filter(|&a| a <= want)
        .max()
        .ok_or_else(|| {
            Error::InvalidParameter(format!(
                "architecture sm_{want} is older than every architecture this NVRTC supports \
                 ({supported:?}); use a newer GPU, or an NVRTC release that still supports it"
            ))
        })
}

/// The target for a device of compute capability `arch`: a CUBIN for the device itself, or for the
/// highest supported architecture of the same major version (CUBINs run on later minors of their
/// major); PTX when the device's major version is newer than anything this NVRTC supports.
pub fn target_for_device(arch: (u32, u32), supported: &[u32]) -> Result<CompileTarget> {
    let best = clamp_arch(arch, supported)?;
    if best / 10 == arch.0 {
        Ok(CompileTarget::Cubin { sm: best })
    } else {
        Ok(CompileTarget::Ptx { compute: best })
    }
}

/// Compiles `source` to a CUBIN for `sm_XY`, where `(X, Y) = arch` is clamped down to what this
/// NVRTC supports. Needs libnvrtc only (no GPU).
///
/// A compile error is [`Error::Compile`] with NVRTC's log, whose lines name `<kernel_name>.cu` and
/// the line number.
pub fn compile_cubin(source: &str, kernel_name: &str, arch: (u32, u32)) -> Result<Vec<u8>> {
    let sm = clamp_arch(arch, &supported_archs()?)?;
    compile(source, kernel_name, CompileTarget::Cubin { sm })
}

/// Compiles `source` to PTX text for `compute_XY` (clamped as in [`compile_cubin`]).
pub fn compile_ptx(source: &str, kernel_name: &str, arch: (u32, u32)) -> Result<String> {
    let compute = clamp_arch(arch, &supported_archs()?)?;
    let bytes = compile(source, kernel_name, CompileTarget::Ptx { compute })?;
    let text = bytes.split(|&b| b == 0).next().unwrap_or(&[]);
    Ok(String::from_utf8_lossy(text).into_owned())
}

/// Compiles for exactly `target` (not clamped). PTX comes back NUL-terminated, as the driver
/// loads it.
pub fn compile(source: &str, kernel_name: &str, target: CompileTarget) -> Result<Vec<u8>> {
    compile_program(source, kernel_name, &target.options(), target.is_cubin())
}

/// Compiles a quick build (see [`CompileTarget::quick_options`]) for exactly `target`.
pub fn compile_quick(source: &str, kernel_name: &str, target: CompileTarget) -> Result<Vec<u8>> {
    compile_program(
        source,
        kernel_name,
        &target.quick_options(),
        target.is_cubin(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const NVRTC13: [u32; 11] = [75, 80, 86, 87, 88, 89, 90, 100, 110, 120, 121];

    #[test]
    fn clamps_down_to_supported() {
        assert_eq!(clamp_arch((9, 0), &NVRTC13).ok(), Some(90));
        assert_eq!(clamp_arch((8, 5), &NVRTC13).ok(), Some(80));
        assert_eq!(clamp_arch((13, 0), &NVRTC13).ok(), Some(121));
        assert!(matches!(
            clamp_arch((6, 1), &NVRTC13),
            Err(Error::InvalidParameter(_))
        ));
    }

    #[test]
    fn device_targets() {
        assert_eq!(
            target_for_device((9, 0), &NVRTC13).ok(),
            Some(CompileTarget::Cubin { sm: 90 })
        );
        assert_eq!(
            target_for_device((8, 9), &[80, 86, 90]).ok(),
            Some(CompileTarget::Cubin { sm: 86 })
        );
        // A newer major than NVRTC knows: PTX, which the driver compiles forward.
        assert_eq!(
            target_for_device((10, 0), &[80, 90]).ok(),
            Some(CompileTarget::Ptx { compute: 90 })
        );
    }

    #[test]
    fn options_pin_rounding() {
        let o = CompileTarget::Cubin { sm: 90 }.options();
        assert_eq!(
            o,
            ["--gpu-architecture=sm_90", "--fmad=false", "--std=c++17"]
        );
        assert_eq!(
            CompileTarget::Ptx { compute: 120 }.to_string(),
            "compute_120"
        );
    }

    #[test]
    fn quick_options_add_the_fast_compile_setting_and_the_quick_define_only() {
        let t = CompileTarget::Cubin { sm: 90 };
        let quick = t.quick_options();
        assert_eq!(quick[..3], t.options()[..]);
        assert_eq!(quick[3..], ["--Ofast-compile=max", "-DPSG_QUICK"]);
    }

    #[test]
    fn jit_modes_from_their_names() {
        assert_eq!(JitMode::parse(None).ok(), Some(JitMode::Tiered));
        assert_eq!(JitMode::parse(Some("")).ok(), Some(JitMode::Tiered));
        assert_eq!(
            JitMode::parse(Some(" Optimized ")).ok(),
            Some(JitMode::Optimized)
        );
        assert_eq!(JitMode::parse(Some("QUICK")).ok(), Some(JitMode::Quick));
        let e = JitMode::parse(Some("fast")).unwrap_err().to_string();
        assert!(e.contains("PSG_JIT") && e.contains("tiered"), "{e}");
    }

    static K: KernelSource = KernelSource::new_static("k", "extern \"C\" __global__ void k() {}");

    #[test]
    fn sources_static_and_owned() {
        let owned = KernelSource::new_owned("k", K.source.to_string());
        assert_eq!(owned, K);
    }
}
