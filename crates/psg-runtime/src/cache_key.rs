//! A hash that stays the same across Rust versions, platforms and runs: the disk cache's key.
//!
//! std's `DefaultHasher` may change between Rust releases, which would silently orphan every cache
//! entry, so the key is FNV-1a (64 bit) written out here.

/// The version of the cache's key and entry layout; bump it when either changes.
pub const CACHE_VERSION: u32 = 2;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a, 64 bit, over a byte stream.
#[derive(Debug, Clone, Copy)]
pub struct StableHasher(u64);

impl Default for StableHasher {
    fn default() -> Self {
        StableHasher(FNV_OFFSET)
    }
}

impl StableHasher {
    /// A hasher in its initial state.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds raw bytes.
    pub fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(FNV_PRIME);
        }
    }

    /// Feeds one field: its length first, so that ("ab", "c") and ("a", "bc") hash apart.
    pub fn field(&mut self, bytes: &[u8]) {
        self.write(&(bytes.len() as u64).to_le_bytes());
        self.write(bytes);
    }

    /// The hash of everything fed so far.
    pub fn finish(&self) -> u64 {
        self.0
    }
}

/// FNV-1a 64 of one byte string.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h = StableHasher::new();
    h.write(bytes);
    h.finish()
}

/// Everything a compiled kernel image depends on; its [`CacheKey::hash`] names the disk cache entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheKey<'a> {
    /// The kernel's function name.
    pub kernel: &'a str,
    /// The CUDA C source.
    pub source: &'a str,
    /// The NVRTC target, e.g. `"sm_90"` (a CUBIN) or `"compute_120"` (PTX).
    pub target: &'a str,
    /// NVRTC's (major, minor) version.
    pub nvrtc_version: (i32, i32),
    /// NVRTC's release and build ([`nvrtc_build`](crate::nvrtc_build)): patch releases of one
    /// (major, minor) version bring other compilers.
    pub nvrtc_build: &'a str,
    /// The NVRTC options, in order.
    pub options: &'a [String],
}

impl CacheKey<'_> {
    /// The stable 64-bit hash of every field and [`CACHE_VERSION`].
    pub fn hash(&self) -> u64 {
        let mut h = StableHasher::new();
        h.field(b"psg-kernel-cache");
        h.field(&CACHE_VERSION.to_le_bytes());
        h.field(self.kernel.as_bytes());
        h.field(self.source.as_bytes());
        h.field(self.target.as_bytes());
        h.field(&self.nvrtc_version.0.to_le_bytes());
        h.field(&self.nvrtc_version.1.to_le_bytes());
        h.field(self.nvrtc_build.as_bytes());
        h.field(&(self.options.len() as u64).to_le_bytes());
        for o in self.options {
            h.field(o.as_bytes());
        }
        h.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_reference_values() {
        // Published FNV-1a 64 test vectors.
        assert_eq!(stable_hash(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(stable_hash(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(stable_hash(b"foobar"), 0x8594_4171_f739_67e8);
    }

    fn key<'a>(source: &'a str, options: &'a [String]) -> CacheKey<'a> {
        CacheKey {
            kernel: "sum_f32",
            source,
            target: "sm_90",
            nvrtc_version: (13, 0),
            nvrtc_build: "release 13.0, V13.0.88; CL-36424714",
            options,
        }
    }

    #[test]
    fn key_is_stable() {
        let opts = vec!["--fmad=false".to_string()];
        // A fixed literal: if this changes, every user's disk cache silently misses. Bump
        // CACHE_VERSION on purpose instead, and update the literal.
        assert_eq!(key("x", &opts).hash(), KEY_LITERAL);
    }

    const KEY_LITERAL: u64 = 0xd5d9_2bd9_3969_8c46;

    #[test]
    fn every_field_changes_the_key() {
        let opts = vec!["--fmad=false".to_string()];
        let base = key("x", &opts);
        let other_opts = vec!["--fmad=true".to_string()];
        let variants = [
            CacheKey {
                kernel: "sum_f64",
                ..base.clone()
            },
            key("y", &opts),
            CacheKey {
                target: "sm_80",
                ..base.clone()
            },
            CacheKey {
                nvrtc_version: (13, 1),
                ..base.clone()
            },
            CacheKey {
                nvrtc_build: "release 13.0, V13.0.48; CL-36260728",
                ..base.clone()
            },
            key("x", &other_opts),
            key("x", &[]),
        ];
        for v in &variants {
            assert_ne!(v.hash(), base.hash(), "{v:?}");
        }
    }
}
