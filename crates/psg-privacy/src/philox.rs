//! Philox4x32-10, the counter-based generator of Salmon et al. (Random123, SC'11).
//!
//! A counter-based generator is a keyed bijection: output `i` is `philox(counter_i, key)`, with
//! no state to carry, so any thread (CPU or GPU) can compute any element's noise directly and
//! the results do not depend on how the work is split.
//!
//! psg's layout: the key is the 64-bit seed (low word first); the counter is a 64-bit *block*
//! index in words 0-1 (low word first) and the 64-bit training *step* in words 2-3 (low word
//! first). How elements map to blocks is described in [`crate::normal`].

/// Philox multiplier for counter word 0 (Random123's `PHILOX_M4x32_0`).
pub const PHILOX_M0: u32 = 0xD251_1F53;
/// Philox multiplier for counter word 2 (Random123's `PHILOX_M4x32_1`).
pub const PHILOX_M1: u32 = 0xCD9E_8D57;
/// Weyl increment of key word 0 between rounds (golden ratio; `PHILOX_W32_0`).
pub const PHILOX_W0: u32 = 0x9E37_79B9;
/// Weyl increment of key word 1 between rounds (sqrt(3) - 1; `PHILOX_W32_1`).
pub const PHILOX_W1: u32 = 0xBB67_AE85;
/// Number of rounds.
pub const PHILOX_ROUNDS: u32 = 10;

/// Philox4x32-10 of `counter` under `key`: four independent-looking 32-bit words.
pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let mut ctr = counter;
    let mut key = key;
    for round in 0..PHILOX_ROUNDS {
        if round > 0 {
            key[0] = key[0].wrapping_add(PHILOX_W0);
            key[1] = key[1].wrapping_add(PHILOX_W1);
        }
        let (hi0, lo0) = mul_hi_lo(PHILOX_M0, ctr[0]);
        let (hi1, lo1) = mul_hi_lo(PHILOX_M1, ctr[2]);
        ctr = [hi1 ^ ctr[1] ^ key[0], lo1, hi0 ^ ctr[3] ^ key[1], lo0];
    }
    ctr
}

/// High and low words of the 64-bit product (`__umulhi` and `*` on the GPU).
fn mul_hi_lo(a: u32, b: u32) -> (u32, u32) {
    let product = u64::from(a) * u64::from(b);
    ((product >> 32) as u32, product as u32)
}

/// The key for a 64-bit seed: `[low word, high word]`.
pub fn key_from_seed(seed: u64) -> [u32; 2] {
    [seed as u32, (seed >> 32) as u32]
}

/// The counter for a block index and a step: `[block lo, block hi, step lo, step hi]`.
pub fn counter(block: u64, step: u64) -> [u32; 4] {
    [
        block as u32,
        (block >> 32) as u32,
        step as u32,
        (step >> 32) as u32,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_answer_zero_counter_zero_key() {
        assert_eq!(
            philox4x32_10([0; 4], [0; 2]),
            [0x6627_e8d5, 0xe169_c58d, 0xbc57_ac4c, 0x9b00_dbd8]
        );
    }

    #[test]
    fn known_answer_all_ones() {
        assert_eq!(
            philox4x32_10([u32::MAX; 4], [u32::MAX; 2]),
            [0x408f_276d, 0x41c8_3b0e, 0xa20b_c7c6, 0x6d54_51fd]
        );
    }

    #[test]
    fn known_answer_pi_digits() {
        let ctr = [0x243f_6a88, 0x85a3_08d3, 0x1319_8a2e, 0x0370_7344];
        let key = [0xa409_3822, 0x299f_31d0];
        assert_eq!(
            philox4x32_10(ctr, key),
            [0xd16c_fe09, 0x94fd_cceb, 0x5001_e420, 0x2412_6ea1]
        );
    }

    #[test]
    fn counter_and_key_layout() {
        assert_eq!(
            counter(0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3210),
            [0x89ab_cdef, 0x0123_4567, 0x7654_3210, 0xfedc_ba98]
        );
        assert_eq!(key_from_seed(0x0000_0002_0000_0001), [1, 2]);
    }
}
