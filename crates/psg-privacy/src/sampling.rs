//! Poisson sampling of batches, the sampling the accountant's epsilon assumes: every example
//! joins each batch independently with probability q, so the batch size varies.
//!
//! Amplification by subsampling rests on **who is in a batch staying secret**. A sampler driven
//! by a seed that is fixed, logged or guessable (the seed of the data set, say) lets an observer
//! who knows it replay the batches: an example known to be in 21 of 512 batches is protected by
//! 21 unsubsampled Gaussian steps, not by the subsampled epsilon (for noise multiplier 1 and
//! delta = 1e-5, about 31 by the same RDP accounting instead of 2.5). Opacus' secure mode draws
//! its sampler's randomness from a CSPRNG for this reason. [`PoissonSampler::secure`] does the
//! same, from the operating system's CSPRNG; [`PoissonSampler::seeded`] is reproducible, for
//! tests and debugging only.
//!
//! ```
//! use psg_privacy::sampling::PoissonSampler;
//!
//! // 60,000 examples, an expected batch of 256.
//! let mut sampler = PoissonSampler::secure(60_000, 256.0 / 60_000.0)?;
//! let batch: Vec<usize> = sampler.sample()?; // ascending example indices, about 256 of them
//! assert!(batch.windows(2).all(|w| w[0] < w[1]) && batch.iter().all(|&i| i < 60_000));
//! assert!(sampler.is_secure());
//! # Ok::<(), psg_privacy::Error>(())
//! ```

use std::fmt;
use std::fs::File;
use std::io::Read;

use crate::error::{Error, Result};

/// Draws Poisson-sampled batches: each call to [`sample`](Self::sample) includes every example
/// `0..len` independently with probability `rate`. The indices are found by geometric skips, so
/// a batch costs about `rate * len + 1` random draws, not `len`.
pub struct PoissonSampler {
    len: usize,
    rate: f64,
    source: Source,
}

/// Where the sampler's random bits come from.
enum Source {
    /// The operating system's CSPRNG, read through a buffer.
    Os {
        urandom: File,
        buffer: Box<[u8; 4096]>,
        used: usize,
    },
    /// SplitMix64 from a seed: reproducible and predictable.
    Seeded { state: u64 },
}

impl PoissonSampler {
    /// A sampler whose randomness comes from `/dev/urandom` (the OS CSPRNG) at every draw: the
    /// batches cannot be replayed, as the privacy guarantee needs.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidSampleRate`] for a `rate` outside [0, 1], and
    /// [`Error::SamplerRandomnessUnavailable`] when `/dev/urandom` cannot be opened.
    pub fn secure(len: usize, rate: f64) -> Result<Self> {
        check_rate(rate)?;
        let urandom = File::open("/dev/urandom").map_err(Error::SamplerRandomnessUnavailable)?;
        Ok(PoissonSampler {
            len,
            rate,
            source: Source::Os {
                urandom,
                buffer: Box::new([0; 4096]),
                used: 4096,
            },
        })
    }

    /// A reproducible sampler from `seed`. Anyone who knows the seed knows every batch, which
    /// voids the amplification the accountant's epsilon counts on: for tests and debugging, not
    /// for a privacy claim.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidSampleRate`] for a `rate` outside [0, 1].
    pub fn seeded(len: usize, rate: f64, seed: u64) -> Result<Self> {
        check_rate(rate)?;
        Ok(PoissonSampler {
            len,
            rate,
            source: Source::Seeded { state: seed },
        })
    }

    /// The next batch: the indices of the examples it includes, ascending. It may be empty, and
    /// its length varies from call to call (binomial, with mean `rate * len`).
    ///
    /// # Errors
    ///
    /// [`Error::SamplerRandomnessUnavailable`] when reading `/dev/urandom` fails, and
    /// [`Error::BatchTooLarge`] when the host cannot hold the batch's indices.
    pub fn sample(&mut self) -> Result<Vec<usize>> {
        let mut batch = Vec::new();
        if self.rate >= 1.0 {
            batch
                .try_reserve_exact(self.len)
                .map_err(|_| Error::BatchTooLarge { examples: self.len })?;
            batch.extend(0..self.len);
            return Ok(batch);
        }
        if self.rate <= 0.0 || self.len == 0 {
            return Ok(batch);
        }
        // The number of examples skipped before the next one included is geometric:
        // P(skip >= k) = (1 - q)^k = P(u <= (1 - q)^k) for u uniform on (0, 1).
        let log_stay = (-self.rate).ln_1p();
        let mut next = 0usize;
        loop {
            let u = self.uniform()?;
            let skip = (u.ln() / log_stay).floor();
            if skip >= (self.len - next) as f64 {
                return Ok(batch);
            }
            next += skip as usize;
            batch.try_reserve(1).map_err(|_| Error::BatchTooLarge {
                examples: batch.len() + 1,
            })?;
            batch.push(next);
            next += 1;
            if next >= self.len {
                return Ok(batch);
            }
        }
    }

    /// Whether the randomness comes from the OS CSPRNG ([`secure`](Self::secure)).
    pub fn is_secure(&self) -> bool {
        matches!(self.source, Source::Os { .. })
    }

    /// The number of examples sampled from.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no examples to sample from.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The probability q with which each example joins a batch.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// A uniform value in (0, 1) from 52 random bits and a half, every value exact (with 53
    /// bits, 2^53 - 1/2 rounds up to 2^53, and u = 1 would include an example at any rate).
    /// Never 1: a rate below 2^-53 includes no example, erring on the side the accountant allows.
    fn uniform(&mut self) -> Result<f64> {
        let bits = self.next_u64()? >> 12;
        Ok((bits as f64 + 0.5) * (1.0 / (1u64 << 52) as f64))
    }

    fn next_u64(&mut self) -> Result<u64> {
        match &mut self.source {
            Source::Os {
                urandom,
                buffer,
                used,
            } => {
                if *used + 8 > buffer.len() {
                    urandom
                        .read_exact(&mut buffer[..])
                        .map_err(Error::SamplerRandomnessUnavailable)?;
                    *used = 0;
                }
                let mut word = [0u8; 8];
                word.copy_from_slice(&buffer[*used..*used + 8]);
                // Bytes once used are not kept: a later read of the sampler's memory cannot
                // replay a batch from them.
                buffer[*used..*used + 8].fill(0);
                *used += 8;
                Ok(u64::from_le_bytes(word))
            }
            Source::Seeded { state } => {
                *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut z = *state;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                Ok(z ^ (z >> 31))
            }
        }
    }
}

impl fmt::Debug for PoissonSampler {
    /// Shows the length, the rate and whether the sampler is secure; never the state or the
    /// buffered random bytes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoissonSampler")
            .field("len", &self.len)
            .field("rate", &self.rate)
            .field("secure", &self.is_secure())
            .finish()
    }
}

impl fmt::Display for PoissonSampler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Poisson sampling of {} examples at rate {} ({})",
            self.len,
            self.rate,
            if self.is_secure() {
                "secure: the OS CSPRNG"
            } else {
                "from a fixed seed: reproducible, and the batches are known to anyone with the seed"
            }
        )
    }
}

fn check_rate(rate: f64) -> Result<()> {
    if (0.0..=1.0).contains(&rate) {
        Ok(())
    } else {
        Err(Error::InvalidSampleRate {
            sample_rate: rate,
            expected: "in [0, 1]",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each example's inclusion frequency, the batch size's mean and variance, and pairs of
    /// neighbours, against a binomial, for both sources.
    #[test]
    fn batches_are_poisson_samples() {
        let (len, rate, draws) = (200usize, 0.05, 20_000usize);
        for mut sampler in [
            PoissonSampler::seeded(len, rate, 7).unwrap(),
            PoissonSampler::secure(len, rate).unwrap(),
        ] {
            let mut hits = vec![0u32; len];
            let mut pairs = 0u32;
            let (mut sum, mut sum_sq) = (0.0, 0.0);
            for _ in 0..draws {
                let batch = sampler.sample().unwrap();
                assert!(batch.windows(2).all(|w| w[0] < w[1]));
                let size = batch.len() as f64;
                sum += size;
                sum_sq += size * size;
                for &i in &batch {
                    hits[i] += 1;
                }
                pairs += batch.windows(2).filter(|w| w[1] == w[0] + 1).count() as u32;
            }
            let n = draws as f64;
            // Every example: 1000 expected, sd 30.8; 5 sd.
            for (i, &h) in hits.iter().enumerate() {
                assert!((f64::from(h) - 1000.0).abs() < 155.0, "example {i}: {h}");
            }
            // The first and the last example are not special (an off-by-one in the skips).
            let mean = sum / n;
            let var = sum_sq / n - mean * mean;
            assert!((mean - 10.0).abs() < 0.1, "mean batch size {mean}");
            assert!((var - 9.5).abs() < 0.5, "batch size variance {var}");
            // Neighbours both in: 199 pairs * q^2 * n = 9950 expected, sd about 100.
            assert!((f64::from(pairs) - 9950.0).abs() < 500.0, "{pairs}");
        }
    }

    /// The last example of a short list, at high rates: an off-by-one at the end of the range
    /// shows here (at q = 0.05 over 200 examples it hid in the noise).
    #[test]
    fn the_last_example_is_sampled_at_the_rate() {
        for (len, rate) in [(1usize, 0.5), (2, 0.5), (2, 0.999), (3, 0.9)] {
            let mut sampler = PoissonSampler::seeded(len, rate, 11).unwrap();
            let draws = 40_000;
            let mut hits = vec![0u32; len];
            for _ in 0..draws {
                for i in sampler.sample().unwrap() {
                    hits[i] += 1;
                }
            }
            let sd = (f64::from(draws) * rate * (1.0 - rate)).sqrt();
            for (i, &h) in hits.iter().enumerate() {
                let z = (f64::from(h) - f64::from(draws) * rate) / sd;
                assert!(
                    z.abs() < 5.0,
                    "len {len}, rate {rate}: example {i}: {h} (z = {z:.1})"
                );
            }
        }
    }

    #[test]
    fn rates_at_the_ends_and_outside() {
        let mut all = PoissonSampler::seeded(5, 1.0, 0).unwrap();
        assert_eq!(all.sample().unwrap(), vec![0, 1, 2, 3, 4]);
        let mut none = PoissonSampler::secure(5, 0.0).unwrap();
        assert!(none.sample().unwrap().is_empty());
        let mut empty = PoissonSampler::secure(0, 0.5).unwrap();
        assert!(empty.sample().unwrap().is_empty() && empty.is_empty());
        for rate in [-0.1, 1.5, f64::NAN, f64::INFINITY] {
            assert!(matches!(
                PoissonSampler::secure(10, rate),
                Err(Error::InvalidSampleRate { .. })
            ));
        }
        // A tiny rate over many examples: skips far past the end stop the batch, no overflow.
        let mut tiny = PoissonSampler::seeded(usize::MAX, 1e-300, 3).unwrap();
        assert!(tiny.sample().unwrap().len() <= 1);
        // SplitMix64's first output from this seed is u64::MAX, the largest uniform: with 53
        // bits it rounded to 1 and included example 0 at any rate.
        let mut top = PoissonSampler::seeded(1000, 1e-300, 0x3162_8af6_7b21_31ab).unwrap();
        assert!(top.sample().unwrap().is_empty());
        // A batch of every example of a list the host cannot hold is an error, not an abort.
        let mut all = PoissonSampler::seeded(usize::MAX, 1.0, 0).unwrap();
        assert!(matches!(all.sample(), Err(Error::BatchTooLarge { .. })));
    }

    #[test]
    fn seeded_samplers_repeat_and_secure_ones_do_not() {
        let draw =
            |s: &mut PoissonSampler| (0..20).map(|_| s.sample().unwrap()).collect::<Vec<_>>();
        let mut a = PoissonSampler::seeded(1000, 0.1, 42).unwrap();
        let mut b = PoissonSampler::seeded(1000, 0.1, 42).unwrap();
        assert_eq!(draw(&mut a), draw(&mut b));
        let mut c = PoissonSampler::secure(1000, 0.1).unwrap();
        let mut d = PoissonSampler::secure(1000, 0.1).unwrap();
        assert_ne!(draw(&mut c), draw(&mut d));
        assert!(!a.is_secure() && c.is_secure());
        assert!(a.to_string().contains("fixed seed") && c.to_string().contains("secure"));
        assert!(!format!("{c:?}").contains("buffer"));
    }
}
