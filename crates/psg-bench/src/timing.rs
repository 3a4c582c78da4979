//! Timing with CUDA events: warm-up, then many timed runs, and the median.

use psg_runtime::CudaDevice;

/// How many runs, and how long an op may take.
#[derive(Debug, Clone, Copy)]
pub struct RunPlan {
    /// Untimed runs first (at least one is always made, to size the run count).
    pub warmup: usize,
    /// Timed runs.
    pub runs: usize,
    /// Seconds the timed runs of one op may take; slower ops get fewer runs (at least
    /// [`MIN_RUNS`]).
    pub budget_s: f64,
}

/// The fewest timed runs an op gets, however slow.
pub const MIN_RUNS: usize = 5;

/// Summary of the timed runs, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    /// Median of the runs.
    pub median_ms: f64,
    /// Fastest run.
    pub min_ms: f64,
    /// Slowest run.
    pub max_ms: f64,
    /// Number of timed runs.
    pub runs: usize,
    /// Whether the time budget lowered the run count below the one asked for.
    pub capped: bool,
}

/// The median (the mean of the two middle values for an even count); NaN for none.
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

impl Stats {
    /// Summarises timed runs.
    pub fn of(times: &[f64], capped: bool) -> Stats {
        Stats {
            median_ms: median(times),
            min_ms: times.iter().copied().fold(f64::INFINITY, f64::min),
            max_ms: times.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            runs: times.len(),
            capped,
        }
    }
}

/// The run count for an op whose (last) warm-up run took `warm_ms`.
pub fn runs_within_budget(plan: &RunPlan, warm_ms: f64) -> (usize, bool) {
    let budget_ms = plan.budget_s * 1e3;
    if warm_ms * plan.runs as f64 <= budget_ms || plan.runs <= MIN_RUNS {
        return (plan.runs, false);
    }
    let fit = (budget_ms / warm_ms.max(1e-9)).floor() as usize;
    (fit.clamp(MIN_RUNS, plan.runs), true)
}

/// Times `f(i)` for run i = 0, 1, ... with CUDA events on `dev`'s stream: `plan.warmup` untimed
/// runs, then the timed ones. Whatever `f` returns (its outputs) is dropped after the run's end
/// event, outside the timed region. Host work inside `f` (a synchronising copy) is timed too.
pub fn time_runs<K>(
    dev: &CudaDevice,
    plan: &RunPlan,
    mut f: impl FnMut(usize) -> psg_runtime::Result<K>,
) -> psg_runtime::Result<Stats> {
    let mut once = |i: usize| -> psg_runtime::Result<f64> {
        let mut kept = None;
        let ms = dev.time_ms(|| {
            kept = Some(f(i)?);
            Ok(())
        })?;
        drop(kept);
        Ok(f64::from(ms))
    };
    let mut warm_ms = 0.0;
    for i in 0..plan.warmup.max(1) {
        warm_ms = once(i)?;
    }
    let (runs, capped) = runs_within_budget(plan, warm_ms);
    let first = plan.warmup.max(1);
    let times = (first..first + runs)
        .map(&mut once)
        .collect::<psg_runtime::Result<Vec<f64>>>()?;
    Ok(Stats::of(&times, capped))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
        let s = Stats::of(&[2.0, 1.0, 5.0], false);
        assert_eq!((s.min_ms, s.max_ms, s.runs), (1.0, 5.0, 3));
    }

    #[test]
    fn budget_lowers_runs_but_not_below_the_minimum() {
        let plan = RunPlan {
            warmup: 3,
            runs: 20,
            budget_s: 10.0,
        };
        assert_eq!(runs_within_budget(&plan, 100.0), (20, false));
        assert_eq!(runs_within_budget(&plan, 1000.0), (10, true));
        assert_eq!(runs_within_budget(&plan, 60_000.0), (MIN_RUNS, true));
    }
}
