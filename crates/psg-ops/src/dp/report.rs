//! What a DP-SGD run reports: epsilon with everything it rests on, printed so that the sampling
//! assumption is never separated from the number.

use std::fmt;

use psg_privacy::accountant::PrivacySpent;

use super::aggregation::UserSensitivity;
use super::clipping::Clipping;

/// Where the sensitivity behind an epsilon comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum SensitivityBasis {
    /// A sum-type aggregation of clipped gradients: psg's own bound.
    Clipping(Clipping),
    /// A robust aggregation with a bound the caller vouches for.
    Caller(UserSensitivity),
}

impl fmt::Display for SensitivityBasis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SensitivityBasis::Clipping(c) => write!(f, "from {c}"),
            SensitivityBasis::Caller(s) => {
                write!(f, "supplied by the caller, who states: {}", s.justification)
            }
        }
    }
}

/// The privacy spent by a DP-SGD run so far, and what the guarantee assumes.
///
/// **The guarantee holds for Poisson sampling**: each example joins each batch independently with
/// probability `sample_rate`, with the batches kept secret (see
/// [`PoissonSampler`](super::PoissonSampler)). Shuffled fixed-size batches are a different
/// mechanism that this epsilon does not cover. `Display` says so, and says when the noise came
/// from a fixed seed.
#[derive(Debug, Clone, PartialEq)]
pub struct EpsilonReport {
    /// Epsilon, delta and the best RDP order (from the accountant; no order for PLDs).
    pub spent: PrivacySpent,
    /// Steps recorded.
    pub steps: u64,
    /// The Poisson sampling rate q of every step.
    pub sample_rate: f64,
    /// The noise multiplier of every step.
    pub noise_multiplier: f64,
    /// The L2 sensitivity the noise was scaled to.
    pub sensitivity: f64,
    /// Where that sensitivity comes from.
    pub basis: SensitivityBasis,
    /// Whether the noise came from the OS CSPRNG ([`NoiseGenerator::secure`]). From a fixed
    /// seed, anyone who knows the seed can recompute the noise and subtract it: the epsilon is
    /// then what the run would have spent, not a guarantee, and `Display` says so.
    ///
    /// [`NoiseGenerator::secure`]: super::NoiseGenerator::secure
    pub secure_noise: bool,
    /// Whether epsilon comes from privacy loss distributions ([`DpSgd::epsilon_pld`]) rather
    /// than RDP.
    ///
    /// [`DpSgd::epsilon_pld`]: super::DpSgd::epsilon_pld
    pub pld: bool,
}

impl EpsilonReport {
    /// Epsilon (`inf` for no guarantee, e.g. noise multiplier 0).
    pub fn epsilon(&self) -> f64 {
        self.spent.epsilon
    }
}

impl fmt::Display for EpsilonReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "epsilon = {} at delta = {} after {} steps",
            self.spent.epsilon, self.spent.delta, self.steps
        )?;
        if let Some(order) = self.spent.best_order {
            write!(f, " (RDP order {order})")?;
        } else if self.pld {
            write!(f, " (PLD accounting)")?;
        }
        write!(
            f,
            "; holds for Poisson sampling of each example at rate {}, with noise multiplier {} \
             and L2 sensitivity {} ({})",
            self.sample_rate, self.noise_multiplier, self.sensitivity, self.basis
        )?;
        if self.spent.order_at_edge {
            write!(f, "; {}", psg_privacy::accountant::EDGE_NOTE)?;
        }
        if !self.secure_noise {
            write!(
                f,
                "; NOT a guarantee: the noise came from a fixed seed, which anyone who knows it \
                 can use to remove the noise (use NoiseGenerator::secure())"
            )?;
        }
        Ok(())
    }
}
