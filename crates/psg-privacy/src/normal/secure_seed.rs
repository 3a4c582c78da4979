//! Seeds from the operating system's CSPRNG, for secure mode.

use std::io::Read;

use crate::error::{Error, Result};

/// A 64-bit seed read from `/dev/urandom`, the operating system's cryptographically secure
/// random number generator (on Linux, the kernel CSPRNG, which never blocks once initialised).
///
/// Opacus' secure mode takes its noise generator from `/dev/urandom` too (through torchcsprng). A
/// seed that an attacker can guess makes the noise predictable and voids the guarantee; use this
/// (or another CSPRNG) rather than a fixed seed whenever the privacy claim matters.
///
/// # Errors
///
/// [`Error::SecureSeedUnavailable`] when `/dev/urandom` cannot be opened or read.
pub fn secure_seed() -> Result<u64> {
    let mut bytes = [0u8; 8];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut urandom| urandom.read_exact(&mut bytes))
        .map_err(Error::SecureSeedUnavailable)?;
    Ok(u64::from_le_bytes(bytes))
}
