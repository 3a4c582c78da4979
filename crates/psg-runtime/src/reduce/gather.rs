//! The build of a tiled kernel for rows of g that do not start 16-byte aligned.
//!
//! A generated tiled (or streaming) kernel loads g in 16-byte vectors where every row starts
//! 16-byte aligned: P times the element size a multiple of 16, and g's address too. Its source
//! has a second build for other rows, selected by defining `PSG_GATHER` before it (see
//! `psg_codegen`'s `gather`): the same vectors gathered from 4-byte words (`1`: f32 and f64 rows,
//! and 16-bit rows that start 4-byte aligned; f32 and f64 tiles are filled an element a thread)
//! or from the words around 2-byte aligned 16-bit elements (`2`), with a group of loads in
//! flight a thread (and, in kernels that do not
//! select, the next tile's while this one is computed). A source without that build (a
//! hand-written tiled kernel) loads unaligned rows element by element, launched with `vec` = 0.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use crate::cache_key::stable_hash;
use crate::dtype::DType;
use crate::jit::KernelSource;

/// How a tiled kernel reads g's rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum RowLoads {
    /// Every row starts 16-byte aligned: 16-byte loads.
    Vectors,
    /// Every row starts 4-byte aligned (always for f32 and f64): vectors of 4-byte words.
    Words,
    /// 16-bit elements in rows that start 2-byte aligned.
    Halves,
}

impl RowLoads {
    /// How rows of `width` elements of `dtype` at address `ptr` are read.
    pub(super) fn of(dtype: DType, width: usize, ptr: u64) -> Self {
        let row_bytes = width * dtype.size_in_bytes();
        if row_bytes.is_multiple_of(16) && ptr.is_multiple_of(16) {
            RowLoads::Vectors
        } else if row_bytes.is_multiple_of(4) && ptr.is_multiple_of(4) {
            RowLoads::Words
        } else {
            RowLoads::Halves
        }
    }
}

/// Where a text is, for the map of builds: static text by address (the hot path hashes nothing),
/// text made at run time by its hash. A kernel is its name and its source (one source may hold
/// several kernels), as in the kernel cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum TextId {
    Static(usize, usize),
    Owned(u64),
}

impl TextId {
    // The variant is the point: static text has an address for the life of the process.
    #[allow(clippy::ptr_arg)]
    fn of(text: &Cow<'static, str>) -> Self {
        match text {
            Cow::Borrowed(t) => TextId::Static(t.as_ptr() as usize, t.len()),
            Cow::Owned(t) => TextId::Owned(stable_hash(t.as_bytes())),
        }
    }
}

type Builds = HashMap<(TextId, TextId, RowLoads), Option<&'static KernelSource>>;

/// The build of `kernel` that reads rows as `loads` says, and the kernel's `vec` argument for it
/// (1: vectors, loaded or gathered; 0: element by element).
pub(super) fn build_for(kernel: &KernelSource, loads: RowLoads) -> (&KernelSource, bool) {
    let mode = match loads {
        RowLoads::Vectors => return (kernel, true),
        RowLoads::Words => 1,
        RowLoads::Halves => 2,
    };
    static BUILDS: OnceLock<Mutex<Builds>> = OnceLock::new();
    let id = (TextId::of(&kernel.name), TextId::of(&kernel.source));
    // A panic while holding the lock can't leave the map half-updated (single inserts).
    let mut builds = BUILDS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let build = *builds.entry((id.0, id.1, loads)).or_insert_with(|| {
        // Each build is made once and kept for the life of the process (the kernel cache
        // identifies static text by its address): at most two a kernel.
        kernel.source.contains("#if PSG_GATHER").then(|| {
            let source = format!("#define PSG_GATHER {mode}\n{}", kernel.source);
            let name: &'static str = match &kernel.name {
                Cow::Borrowed(n) => n,
                Cow::Owned(n) => Box::leak(n.clone().into_boxed_str()),
            };
            &*Box::leak(Box::new(KernelSource::new_static(
                name,
                Box::leak(source.into_boxed_str()),
            )))
        })
    });
    match build {
        Some(b) => (b, true),
        None => (kernel, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_vectors_only_where_every_row_starts_16_byte_aligned() {
        // f32: P a multiple of 4 and an aligned buffer.
        assert_eq!(RowLoads::of(DType::F32, 4096, 256), RowLoads::Vectors);
        assert_eq!(RowLoads::of(DType::F32, 4098, 256), RowLoads::Words);
        assert_eq!(RowLoads::of(DType::F32, 4097, 256), RowLoads::Words);
        assert_eq!(RowLoads::of(DType::F32, 4096, 260), RowLoads::Words);
        // f64: P even.
        assert_eq!(RowLoads::of(DType::F64, 2, 0), RowLoads::Vectors);
        assert_eq!(RowLoads::of(DType::F64, 3, 0), RowLoads::Words);
        // 16-bit: P a multiple of 8; else words where P is even and g 4-byte aligned.
        for dtype in [DType::BF16, DType::F16] {
            assert_eq!(RowLoads::of(dtype, 8, 512), RowLoads::Vectors);
            assert_eq!(RowLoads::of(dtype, 6, 512), RowLoads::Words);
            assert_eq!(RowLoads::of(dtype, 5, 512), RowLoads::Halves);
            assert_eq!(RowLoads::of(dtype, 1, 512), RowLoads::Halves);
            assert_eq!(RowLoads::of(dtype, 8, 514), RowLoads::Halves);
            assert_eq!(RowLoads::of(dtype, 8, 516), RowLoads::Words);
        }
    }

    #[test]
    fn unaligned_rows_get_a_build_with_gather_defined_made_once() {
        static SOURCE: &str = "#ifndef PSG_GATHER\n#define PSG_GATHER 0\n#endif\n#if PSG_GATHER\n#endif\nextern \"C\" __global__ void k() {}\n";
        let kernel = KernelSource::new_static("k", SOURCE);
        let (same, vec) = build_for(&kernel, RowLoads::Vectors);
        assert!(vec);
        assert!(std::ptr::eq(same, &kernel));
        let (words, vec) = build_for(&kernel, RowLoads::Words);
        assert!(vec);
        assert_eq!(words.name, "k");
        assert_eq!(words.source, format!("#define PSG_GATHER 1\n{SOURCE}"));
        let (halves, _) = build_for(&kernel, RowLoads::Halves);
        assert_eq!(halves.source, format!("#define PSG_GATHER 2\n{SOURCE}"));
        // The same text each time (the kernel cache knows static text by its address).
        let (again, _) = build_for(&kernel, RowLoads::Words);
        assert!(std::ptr::eq(words, again));
        assert!(matches!(words.source, Cow::Borrowed(_)));
        // Text made at run time gets its build too, and an owned name is kept.
        let owned = KernelSource::new_owned("user_k", SOURCE);
        let (build, vec) = build_for(&owned, RowLoads::Halves);
        assert!(vec);
        assert_eq!(build.name, "user_k");
        assert!(build.source.starts_with("#define PSG_GATHER 2\n"));
        // Two kernels of one source get a build each, under their own names.
        let other = KernelSource::new_static("k2", SOURCE);
        let (build, _) = build_for(&other, RowLoads::Words);
        assert_eq!(build.name, "k2");
        assert!(!std::ptr::eq(build, words));
        let (build, _) = build_for(&kernel, RowLoads::Words);
        assert!(std::ptr::eq(build, words));
    }

    #[test]
    fn a_kernel_without_the_build_loads_unaligned_rows_element_by_element() {
        let kernel = KernelSource::new_static("h", "extern \"C\" __global__ void h(int vec) {}");
        let (same, vec) = build_for(&kernel, RowLoads::Words);
        assert!(!vec);
        assert!(std::ptr::eq(same, &kernel));
        let (_, vec) = build_for(&kernel, RowLoads::Vectors);
        assert!(vec);
    }
}
