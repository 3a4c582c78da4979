//! Trains a small MLP classifier (20 -> 64 -> 64 -> 10, ReLU) on seeded synthetic data (Gaussian
//! blobs, 10 classes) with psg's capture layers. Every step runs one forward and one backward
//! pass; from what it captured, each Linear layer's kernel gives the per-sample gradients and the
//! batch gradient in one launch, and the update aggregates them as `--aggregate` says:
//!
//! - `mean`: the batch gradient over B (no per-sample work needed, but it comes from the same pass);
//! - `clipped-mean`: each sample's gradient clipped to norm `--clip` over all layers together
//!   (`psg::ops::flat_clip_factors`), then averaged (`psg::ops::clipped_mean`);
//! - `median`: the coordinate-wise median of the per-sample gradients, handed straight from the
//!   layer kernel to `psg::ops::median`;
//! - `sign`: signSGD with majority vote (`psg::ops::majority_vote`).
//!
//! Runs on CUDA when `psg::select_device()` finds a usable GPU, else on the CPU (`PSG_DEVICE=cpu`
//! forces it).
//!
//! ```text
//! cargo run --release --example train_mlp -- --aggregate median
//! ```
//!
//! `--dp` is where DP-SGD noise and epsilon reporting will go (see [`privatize`]); it is not
//! implemented yet and is refused.

use std::time::Instant;

use psg::ops::layers::capture::{
    predictions, sgd_step, softmax_cross_entropy, Layer, Linear, Relu, Sequential,
};
use psg::ops::layers::Sink;
use psg::ops::{clipped_mean, flat_clip_factors, majority_vote, median, Denominator};
use psg::{Device, Error, Result, Tensor};

const CLASSES: usize = 10;
const FEATURES: usize = 20;
const HIDDEN: usize = 64;

/// How the per-sample gradients of a step become one update direction.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Aggregate {
    Mean,
    ClippedMean,
    Median,
    Sign,
}

impl Aggregate {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "mean" => Some(Aggregate::Mean),
            "clipped-mean" => Some(Aggregate::ClippedMean),
            "median" => Some(Aggregate::Median),
            "sign" => Some(Aggregate::Sign),
            _ => None,
        }
    }

    /// A learning rate that trains this problem well with this aggregate.
    fn default_lr(self) -> f32 {
        match self {
            Aggregate::Mean | Aggregate::ClippedMean => 0.5,
            // The coordinate-wise median of 10-class gradients is small and noisy: it learns, slower.
            Aggregate::Median => 0.2,
            Aggregate::Sign => 0.001,
        }
    }
}

struct Options {
    aggregate: Aggregate,
    epochs: usize,
    batch: usize,
    lr: Option<f32>,
    clip: f64,
    seed: u64,
    dp: bool,
}

const USAGE: &str =
    "usage: train_mlp [--aggregate mean|clipped-mean|median|sign] [--epochs N] [--batch B] \
                     [--lr LR] [--clip C] [--seed S] [--dp]";

fn parse_args() -> std::result::Result<Options, String> {
    let mut o = Options {
        aggregate: Aggregate::Mean,
        epochs: 8,
        batch: 128,
        lr: None,
        clip: 1.0,
        seed: 0,
        dp: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--dp" {
            o.dp = true;
            continue;
        }
        let value = args
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let bad = || format!("{flag}: bad value {value:?}\n{USAGE}");
        match flag.as_str() {
            "--aggregate" => o.aggregate = Aggregate::parse(&value).ok_or_else(bad)?,
            "--epochs" => o.epochs = value.parse().map_err(|_| bad())?,
            "--batch" => o.batch = value.parse().ok().filter(|&b| b > 0).ok_or_else(bad)?,
            "--lr" => o.lr = Some(value.parse().map_err(|_| bad())?),
            "--clip" => o.clip = value.parse().map_err(|_| bad())?,
            "--seed" => o.seed = value.parse().map_err(|_| bad())?,
            _ => return Err(format!("unknown flag {flag}\n{USAGE}")),
        }
    }
    Ok(o)
}

/// SplitMix64 with Box-Muller normals: the data set is the same on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn uniform(&mut self) -> f64 {
        ((self.next() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    fn normal(&mut self) -> f32 {
        let (u, v) = (self.uniform(), self.uniform());
        ((-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()) as f32
    }
}

/// Gaussian blobs: a random centre per class, unit noise around it.
struct Dataset {
    x: Vec<f32>,
    y: Vec<u32>,
}

impl Dataset {
    fn blobs(n: usize, centres: &[f32], rng: &mut Rng) -> Dataset {
        let y: Vec<u32> = (0..n)
            .map(|_| (rng.next() % CLASSES as u64) as u32)
            .collect();
        let x = y
            .iter()
            .flat_map(|&c| centres[c as usize * FEATURES..][..FEATURES].to_vec())
            .map(|m| m + rng.normal())
            .collect();
        Dataset { x, y }
    }

    fn len(&self) -> usize {
        self.y.len()
    }

    /// The samples `order[range]` as a `[B, FEATURES]` tensor on `device`, and their labels.
    fn batch(&self, order: &[usize], device: &Device) -> Result<(Tensor, Vec<u32>)> {
        let x: Vec<f32> = order
            .iter()
            .flat_map(|&i| self.x[i * FEATURES..(i + 1) * FEATURES].to_vec())
            .collect();
        let y = order.iter().map(|&i| self.y[i]).collect();
        Ok((Tensor::from_vec(x, &[order.len(), FEATURES], device)?, y))
    }
}

fn model(seed: u64, device: &Device) -> Result<Sequential> {
    Ok(Sequential::new(vec![
        Box::new(Linear::init(FEATURES, HIDDEN, true, seed + 1, device)?) as Box<dyn Layer>,
        Box::new(Relu::new()),
        Box::new(Linear::init(HIDDEN, HIDDEN, true, seed + 2, device)?),
        Box::new(Relu::new()),
        Box::new(Linear::init(HIDDEN, CLASSES, true, seed + 3, device)?),
    ]))
}

/// One update direction per parameter (in `model.params()` order) from the last forward and
/// backward pass, and the factor the learning rate is multiplied by.
fn aggregate(
    model: &Sequential,
    how: Aggregate,
    clip: f64,
    batch: usize,
) -> Result<(Vec<Tensor>, f32)> {
    match how {
        // The batch gradient of the summed loss, over B.
        Aggregate::Mean => {
            let grads = model.param_grads(Sink::Keep)?;
            Ok((
                grads.into_iter().map(|g| g.batch).collect(),
                1.0 / batch as f32,
            ))
        }
        Aggregate::ClippedMean => {
            let grads = model.param_grads(Sink::Keep)?;
            let per_sample: Vec<&Tensor> = grads.iter().map(|g| g.per_sample.tensor()).collect();
            let factors = flat_clip_factors(&per_sample, clip)?;
            let directions = per_sample
                .iter()
                .map(|g| clipped_mean(g, &factors, Denominator::BatchSize))
                .collect::<Result<Vec<_>>>()?;
            Ok((directions, 1.0))
        }
        // Straight from the layer kernels into the reduction.
        Aggregate::Median => reduced(model, &median),
        Aggregate::Sign => reduced(model, &majority_vote),
    }
}

fn reduced(
    model: &Sequential,
    reduction: &dyn Fn(&Tensor) -> Result<Tensor>,
) -> Result<(Vec<Tensor>, f32)> {
    let grads = model.param_grads(Sink::Reduce(reduction))?;
    let directions = grads
        .into_iter()
        .map(|g| {
            g.per_sample
                .reduced()
                .cloned()
                .ok_or_else(|| Error::InvalidParameter("expected a reduced gradient".into()))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((directions, 1.0))
}

/// What the privacy hook knows about a step.
#[allow(dead_code)]
struct StepInfo {
    /// Steps taken so far (0-based index of this one).
    step: usize,
    /// Samples in this batch.
    batch: usize,
    /// The sampling rate (batch size over data set size).
    sample_rate: f64,
    /// The clip norm C (the L2 sensitivity of a sum of flat-clipped per-sample gradients).
    clip: f64,
}

/// DP-SGD's hook, called once per step with the aggregated update directions when `--dp` is on:
/// this is where Gaussian noise (std = noise multiplier x C, over the expected batch size) will be
/// added to the clipped mean and the accountant told about the step, so that epsilon can be
/// reported per epoch (valid for Poisson sampling at `sample_rate`). Not implemented yet.
fn privatize(directions: Vec<Tensor>, info: &StepInfo) -> Result<Vec<Tensor>> {
    let _ = (&directions, info.step);
    Err(Error::InvalidParameter(
        "--dp: DP-SGD noise and epsilon reporting are not implemented yet (the hook is privatize() in \
         examples/train_mlp.rs); run without --dp"
            .into(),
    ))
}

fn accuracy(model: &mut Sequential, data: &Dataset, device: &Device) -> Result<f64> {
    let all: Vec<usize> = (0..data.len()).collect();
    let (x, y) = data.batch(&all, device)?;
    let pred = predictions(&model.forward(&x)?)?;
    Ok(pred
        .iter()
        .zip(&y)
        .filter(|(&p, &l)| p == l as usize)
        .count() as f64
        / y.len().max(1) as f64)
}

fn run(o: &Options) -> Result<()> {
    let choice = psg::select_device();
    let device = choice.device.clone();
    println!("device: {}", choice.reason);
    let lr = o.lr.unwrap_or_else(|| o.aggregate.default_lr());
    println!(
        "aggregate: {:?}, lr {lr}, batch {}, epochs {}, clip {}",
        o.aggregate, o.batch, o.epochs, o.clip
    );

    let mut rng = Rng(o.seed);
    let centres: Vec<f32> = (0..CLASSES * FEATURES)
        .map(|_| 0.8 * rng.normal())
        .collect();
    let train = Dataset::blobs(8192, &centres, &mut rng);
    let test = Dataset::blobs(2048, &centres, &mut rng);
    let mut model = model(o.seed, &device)?;
    println!("chance accuracy: {:.1}%", 100.0 / CLASSES as f64);

    let mut order: Vec<usize> = (0..train.len()).collect();
    let mut step = 0;
    for epoch in 1..=o.epochs {
        let start = Instant::now();
        // A seeded shuffle (Fisher-Yates).
        for i in (1..order.len()).rev() {
            order.swap(i, (rng.next() % (i as u64 + 1)) as usize);
        }
        let (mut loss_sum, mut correct) = (0.0f64, 0usize);
        for chunk in order.chunks(o.batch) {
            let (x, y) = train.batch(chunk, &device)?;
            // One forward and one backward pass capture every layer's (A, G).
            let logits = model.forward(&x)?;
            let ce = softmax_cross_entropy(&logits, &y)?;
            model.backward(&ce.grad_logits)?;
            let (mut directions, scale) = aggregate(&model, o.aggregate, o.clip, chunk.len())?;
            if o.dp {
                let info = StepInfo {
                    step,
                    batch: chunk.len(),
                    sample_rate: o.batch as f64 / train.len() as f64,
                    clip: o.clip,
                };
                directions = privatize(directions, &info)?;
            }
            let params = model
                .params()
                .into_iter()
                .zip(&directions)
                .map(|(p, d)| sgd_step(p, d, lr * scale))
                .collect::<Result<Vec<_>>>()?;
            model.set_params(params)?;
            loss_sum += ce.mean_loss()? * chunk.len() as f64;
            correct += predictions(&logits)?
                .iter()
                .zip(&y)
                .filter(|(&p, &l)| p == l as usize)
                .count();
            step += 1;
        }
        let test_acc = accuracy(&mut model, &test, &device)?;
        println!(
            "epoch {epoch}: loss {:.4}, train accuracy {:.1}%, test accuracy {:.1}% ({:.2} s)",
            loss_sum / train.len() as f64,
            100.0 * correct as f64 / train.len() as f64,
            100.0 * test_acc,
            start.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

fn main() {
    let options = match parse_args() {
        Ok(o) => o,
        Err(msg) => {
            eprintln!("{msg}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(&options) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
