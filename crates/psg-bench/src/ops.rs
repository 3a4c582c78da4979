//! The table of operations the benchmark times: each built-in through its public API, what it
//! writes, and so the bytes it must move (its floor).
//!
//! Names are shared with `bench/torch_baseline.py`, which times PyTorch's equivalent of each.

use psg_ops::{Denominator, OutlierRule, Removed};
use psg_runtime::{Result, Tensor};

use crate::error::{BenchError, BenchResult};

/// What an op writes per column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outputs {
    /// `n` values per column (`n` tensors of P elements).
    Columns(usize),
    /// A tensor shaped like g.
    Batch,
}

/// Parameters that depend on the shape of g.
#[derive(Debug, Clone, Copy)]
pub struct Params {
    /// Flat clip norm C (about the median per-sample norm of the generated data).
    pub clip_norm: f64,
    /// 0-based k of `kth`.
    pub k: usize,
}

impl Params {
    /// The parameters for g of B samples of P elements. The generated data has unit variance
    /// times a per-sample scale in [0.5, 1.5), so per-sample norms are about sqrt(P) * scale and
    /// C = sqrt(P) clips about half of the samples.
    pub fn for_shape(b: usize, p: usize) -> Self {
        Params {
            clip_norm: (p as f64).sqrt(),
            k: b / 4,
        }
    }
}

/// One timed operation.
pub struct Op {
    /// Key shared with the PyTorch baseline and the JSON.
    pub name: &'static str,
    /// The psg call, for the table's legend.
    pub call: &'static str,
    /// What it writes.
    pub outputs: Outputs,
    /// How many times the floor reads g (2 for clipping: norms, then the aggregate).
    pub g_reads: usize,
    /// A remark printed under the table ("" for none).
    pub note: &'static str,
    /// Runs it on g; the outputs are returned so that they outlive the timed region.
    pub run: fn(&Tensor, &Params) -> Result<Vec<Tensor>>,
}

impl Op {
    /// Bytes the op must move for g[b, p] of `elem` bytes an element: g read `g_reads` times and
    /// each output written once (outputs have g's dtype).
    pub fn floor_bytes(&self, b: usize, p: usize, elem: usize) -> u64 {
        let g = (b as u64) * (p as u64) * (elem as u64);
        let out = match self.outputs {
            Outputs::Columns(n) => (n as u64) * (p as u64) * (elem as u64),
            Outputs::Batch => g,
        };
        (self.g_reads as u64) * g + out
    }
}

const CLIP_NOTE: &str = "floor reads g twice (norms, then the aggregate); time includes the \
norms, the clip factors (computed on the device, no host round trip) and the aggregate";

fn one(t: Tensor) -> Vec<Tensor> {
    vec![t]
}

fn outlier(g: &Tensor, rule: OutlierRule) -> Result<Vec<Tensor>> {
    let r = psg_ops::outlier_mean(g, rule)?;
    Ok(vec![r.mean, r.kept])
}

fn gaussian(g: &Tensor) -> Result<Vec<Tensor>> {
    let (sum, mean) = psg_ops::gaussian_weighted(g)?;
    Ok(vec![sum, mean])
}

fn clipped(g: &Tensor, p: &Params, median: bool) -> Result<Vec<Tensor>> {
    let factors = psg_ops::flat_clip_factors(&[g], p.clip_norm)?;
    let out = if median {
        psg_ops::clipped_median(g, &factors)?
    } else {
        psg_ops::clipped_mean(g, &factors, Denominator::BatchSize)?
    };
    Ok(vec![out, factors])
}

#[allow(clippy::type_complexity)]
const fn op(
    name: &'static str,
    call: &'static str,
    outputs: Outputs,
    g_reads: usize,
    note: &'static str,
    run: fn(&Tensor, &Params) -> Result<Vec<Tensor>>,
) -> Op {
    Op {
        name,
        call,
        outputs,
        g_reads,
        note,
        run,
    }
}

const MEDIAN_NOTE: &str =
    "averaged median (NumPy); torch's counterpart, torch.quantile(g, 0.5, 0), \
takes float and double only (n/a in bf16)";

/// Every operation, in table order.
pub fn all() -> &'static [Op] {
    use Outputs::{Batch, Columns};
    const Z3: OutlierRule = OutlierRule::ZScore { k: 3.0 };
    static OPS: &[Op] = &[
        op("sum", "sum(g)", Columns(1), 1, "", |g, _| {
            psg_ops::sum(g).map(one)
        }),
        op("mean", "mean(g)", Columns(1), 1, "", |g, _| {
            psg_ops::mean(g).map(one)
        }),
        op("var", "var(g, 1)", Columns(1), 1, "", |g, _| {
            psg_ops::var(g, 1.0).map(one)
        }),
        op("std", "std(g, 1)", Columns(1), 1, "", |g, _| {
            psg_ops::std(g, 1.0).map(one)
        }),
        op("sign_sum", "sign_sum(g)", Columns(1), 1, "", |g, _| {
            psg_ops::sign_sum(g).map(one)
        }),
        op("median", "median(g)", Columns(1), 1, MEDIAN_NOTE, |g, _| {
            psg_ops::median(g).map(one)
        }),
        op("median_low", "median_low(g)", Columns(1), 1, "", |g, _| {
            psg_ops::median_low(g).map(one)
        }),
        op("quantile", "quantile(g, 0.9)", Columns(1), 1, "", |g, _| {
            psg_ops::quantile(g, 0.9).map(one)
        }),
        op("kth", "kth(g, B/4)", Columns(1), 1, "", |g, p| {
            psg_ops::kth(g, p.k).map(one)
        }),
        op(
            "zscore_mean",
            "outlier_mean(g, ZScore{k: 3})",
            Columns(2),
            1,
            "",
            |g, _| outlier(g, Z3),
        ),
        op(
            "mad_mean",
            "outlier_mean(g, Mad{k: 3})",
            Columns(2),
            1,
            "",
            |g, _| outlier(g, OutlierRule::Mad { k: 3.0 }),
        ),
        op(
            "trim_mean",
            "outlier_mean(g, TrimFraction{alpha: 0.1})",
            Columns(2),
            1,
            "",
            |g, _| outlier(g, OutlierRule::TrimFraction { alpha: 0.1 }),
        ),
        op(
            "zscore_remove",
            "remove_outliers(g, ZScore{k: 3}, Zero)",
            Batch,
            1,
            "",
            |g, _| psg_ops::remove_outliers(g, Z3, Removed::Zero).map(one),
        ),
        op("sign", "sign(g)", Batch, 1, "", |g, _| {
            psg_ops::sign(g).map(one)
        }),
        op(
            "clip_values_relative",
            "clip_values_relative(g, 0.5)",
            Batch,
            1,
            "",
            |g, _| psg_ops::clip_values_relative(g, 0.5).map(one),
        ),
        op(
            "gaussian_weighted_sum",
            "gaussian_weighted_sum(g)",
            Columns(1),
            1,
            "",
            |g, _| psg_ops::gaussian_weighted_sum(g).map(one),
        ),
        op(
            "gaussian_weighted",
            "gaussian_weighted(g): sum, mean",
            Columns(2),
            1,
            "",
            |g, _| gaussian(g),
        ),
        op(
            "clipped_mean",
            "flat_clip_factors + clipped_mean",
            Columns(1),
            2,
            CLIP_NOTE,
            |g, p| clipped(g, p, false),
        ),
        op(
            "clipped_median",
            "flat_clip_factors + clipped_median",
            Columns(1),
            2,
            CLIP_NOTE,
            |g, p| clipped(g, p, true),
        ),
    ];
    OPS
}

/// The op called `name`.
pub fn find(name: &str) -> Option<&'static Op> {
    all().iter().find(|o| o.name == name)
}

/// The table's name for `name`, or a usage error listing the names.
pub fn lookup(name: &str) -> BenchResult<&'static str> {
    let name = name.trim();
    find(name).map(|o| o.name).ok_or_else(|| {
        let names: Vec<&str> = all().iter().map(|o| o.name).collect();
        BenchError::Usage(format!(
            "unknown op {name:?}; the ops are {}",
            names.join(", ")
        ))
    })
}

/// The op table as text, for `--list-ops`.
pub fn describe() -> String {
    let mut s = format!("{:<22} {:<22} {}\n", "op", "floor: bytes moved", "psg call");
    for o in all() {
        let out = match o.outputs {
            Outputs::Columns(n) => format!("{n} x [P]"),
            Outputs::Batch => "[B, P]".to_string(),
        };
        let floor = format!("{} x g + {out}", o.g_reads);
        s.push_str(&format!("{:<22} {floor:<22} {}\n", o.name, o.call));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use psg_runtime::half;

    #[test]
    fn names_are_unique_and_found() {
        let mut names: Vec<&str> = all().iter().map(|o| o.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), all().len());
        assert!(lookup("median").is_ok());
        assert!(lookup("nope").is_err());
    }

    #[test]
    fn floors() {
        let mean = find("mean").unwrap();
        assert_eq!(mean.floor_bytes(256, 1 << 20, 4), (257u64 << 20) * 4);
        let clip = find("clipped_mean").unwrap();
        assert_eq!(clip.floor_bytes(256, 1 << 20, 2), (513u64 << 20) * 2);
        let remove = find("zscore_remove").unwrap();
        assert_eq!(remove.floor_bytes(64, 10, 4), 2 * 64 * 10 * 4);
    }

    /// Every op runs on the CPU backend (no GPU needed) and returns outputs of the right shape.
    #[test]
    fn every_op_runs_on_the_cpu() {
        let (b, p) = (9, 7);
        let data: Vec<f32> = (0..b * p)
            .map(|i| ((i * 37 % 23) as f32 - 11.0) / 3.0)
            .collect();
        let cpu = psg_runtime::Device::Cpu;
        let bf16: Vec<half::bf16> = data.iter().map(|&x| half::bf16::from_f32(x)).collect();
        let f32_g = Tensor::from_slice(&data, &[b, p], &cpu).unwrap();
        let bf16_g = Tensor::from_vec(bf16, &[b, p], &cpu).unwrap();
        let params = Params::for_shape(b, p);
        for g in [f32_g, bf16_g] {
            for op in all() {
                let out = (op.run)(&g, &params)
                    .unwrap_or_else(|e| panic!("{} {}: {e}", op.name, g.dtype()));
                let want = match op.outputs {
                    Outputs::Columns(_) => vec![p],
                    Outputs::Batch => vec![b, p],
                };
                assert_eq!(out[0].shape(), &want[..], "{}", op.name);
                assert_eq!(out[0].dtype(), g.dtype(), "{}", op.name);
            }
        }
    }
    /// bench/torch_baseline.py times the same ops under the same names with the same floors
    /// (bench/combine.py joins on the names).
    #[test]
    fn torch_baseline_has_the_same_ops_and_floors() {
        let py = include_str!("../../../bench/torch_baseline.py");
        let mut torch_ops = Vec::new();
        for line in py.lines().map(str::trim).filter(|l| l.starts_with("Op(\"")) {
            let fields: Vec<&str> = line["Op(".len()..].splitn(4, ',').map(str::trim).collect();
            let name = fields[0].trim_matches('"');
            let outputs = match fields[1] {
                "\"batch\"" => Outputs::Batch,
                n => Outputs::Columns(n.parse().unwrap()),
            };
            let reads: usize = fields[2].parse().unwrap();
            torch_ops.push((name.to_string(), outputs, reads));
        }
        let ours: Vec<(String, Outputs, usize)> = all()
            .iter()
            .map(|o| (o.name.to_string(), o.outputs, o.g_reads))
            .collect();
        assert_eq!(torch_ops, ours);
    }
}
