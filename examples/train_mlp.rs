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
//! `--dp` trains with DP-SGD instead (`psg::ops::dp`): batches are drawn by Poisson sampling at
//! rate q = batch / N (the assumption epsilon rests on), each sample is clipped to `--clip` over
//! all layers, Gaussian noise of std `--noise` x C is added to the clipped sum, which is divided by
//! the expected batch size, and epsilon at `--delta` is printed after every epoch.
//! `--epsilon-budget E` stops training before a step would spend more than E. The noise and the
//! batches (`PoissonSampler`) draw from the OS CSPRNG unless `--noise-seed S` asks for a
//! reproducible (and then not secure) run: `--seed` sets only the data and the initial weights.
//!
//! ```text
//! cargo run --release --example train_mlp -- --dp --noise 1.0 --epsilon-budget 3
//! ```

use std::time::Instant;

use psg::ops::dp::{Budget, Clipping, DpError, DpSgd, DpSgdConfig, NoiseGenerator, PoissonSampler};
use psg::ops::layers::capture::{
    predictions, sgd_step, softmax_cross_entropy, Layer, Linear, Relu, Sequential,
};
use psg::ops::layers::Sink;
use psg::ops::{clipped_mean, flat_clip_factors, majority_vote, median, Denominator};
use psg::{Device, Error, Result, Tensor};

const CLASSES: usize = 10;
/// Examples in the training set.
const TRAIN_EXAMPLES: usize = 8192;
const FEATURES: usize = 20;
const HIDDEN: usize = 64;
/// DP-SGD's learning rate unless `--lr` says otherwise.
const DP_LR: f32 = 0.5;

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
    /// Whether `--aggregate` was given (DP-SGD has its own aggregation).
    aggregate_given: bool,
    /// DP-only flags given (--noise, --delta, --epsilon-budget, --noise-seed).
    dp_flags_given: bool,
    epochs: usize,
    batch: usize,
    lr: Option<f32>,
    clip: f64,
    seed: u64,
    dp: bool,
    noise: f64,
    delta: f64,
    epsilon_budget: Option<f64>,
    noise_seed: Option<u64>,
}

const USAGE: &str =
    "usage: train_mlp [--aggregate mean|clipped-mean|median|sign] [--epochs N] [--batch B] \
                     [--lr LR] [--clip C] [--seed S] \
                     [--dp [--noise SIGMA] [--delta D] [--epsilon-budget E] [--noise-seed S]]";

fn parse_args() -> std::result::Result<Options, String> {
    let mut o = Options {
        aggregate: Aggregate::Mean,
        aggregate_given: false,
        dp_flags_given: false,
        epochs: 8,
        batch: 128,
        lr: None,
        clip: 1.0,
        seed: 0,
        dp: false,
        noise: 1.0,
        delta: 1e-5,
        epsilon_budget: None,
        noise_seed: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--help" || flag == "-h" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        if flag == "--dp" {
            o.dp = true;
            continue;
        }
        const VALUED: [&str; 10] = [
            "--aggregate",
            "--epochs",
            "--batch",
            "--lr",
            "--clip",
            "--seed",
            "--noise",
            "--delta",
            "--epsilon-budget",
            "--noise-seed",
        ];
        if !VALUED.contains(&flag.as_str()) {
            return Err(format!("unknown flag {flag}\n{USAGE}"));
        }
        let value = args
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let bad = || format!("{flag}: bad value {value:?}\n{USAGE}");
        match flag.as_str() {
            "--aggregate" => {
                o.aggregate = Aggregate::parse(&value).ok_or_else(bad)?;
                o.aggregate_given = true;
            }
            "--epochs" => o.epochs = value.parse().map_err(|_| bad())?,
            "--batch" => o.batch = value.parse().ok().filter(|&b| b > 0).ok_or_else(bad)?,
            "--lr" => {
                let lr: f32 = value.parse().map_err(|_| bad())?;
                o.lr = Some(
                    Some(lr)
                        .filter(|l| l.is_finite() && *l > 0.0)
                        .ok_or_else(bad)?,
                );
            }
            "--clip" => o.clip = value.parse().map_err(|_| bad())?,
            "--seed" => o.seed = value.parse().map_err(|_| bad())?,
            "--noise" => {
                o.dp_flags_given = true;
                o.noise = value.parse().map_err(|_| bad())?;
            }
            "--delta" => {
                o.dp_flags_given = true;
                o.delta = value.parse().map_err(|_| bad())?;
            }
            "--epsilon-budget" => {
                o.dp_flags_given = true;
                o.epsilon_budget = Some(value.parse().map_err(|_| bad())?);
            }
            "--noise-seed" => {
                o.dp_flags_given = true;
                o.noise_seed = Some(value.parse().map_err(|_| bad())?);
            }
            _ => return Err(format!("unknown flag {flag}\n{USAGE}")),
        }
    }
    if !o.dp && o.dp_flags_given {
        return Err(format!(
            "--noise, --delta, --epsilon-budget and --noise-seed apply with --dp only: without it \
             training is not private\n{USAGE}"
        ));
    }
    if o.batch > TRAIN_EXAMPLES {
        return Err(format!(
            "--batch {} is larger than the training set ({TRAIN_EXAMPLES} examples)\n{USAGE}",
            o.batch
        ));
    }
    if o.dp && o.aggregate_given {
        return Err(format!(
            "--aggregate applies without --dp: DP-SGD clips each sample and averages with noise \
             (the only aggregation with an epsilon)\n{USAGE}"
        ));
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
        Box::new(Linear::init(
            FEATURES,
            HIDDEN,
            true,
            seed.wrapping_add(1),
            device,
        )?) as Box<dyn Layer>,
        Box::new(Relu::new()),
        Box::new(Linear::init(
            HIDDEN,
            HIDDEN,
            true,
            seed.wrapping_add(2),
            device,
        )?),
        Box::new(Relu::new()),
        Box::new(Linear::init(
            HIDDEN,
            CLASSES,
            true,
            seed.wrapping_add(3),
            device,
        )?),
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
            let per_sample: Vec<&Tensor> = grads
                .iter()
                .map(|g| g.per_sample.tensor())
                .collect::<Result<_>>()?;
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

/// DP-SGD training: Poisson-sampled batches, one `DpSgd::step` per batch on the per-sample
/// gradients of the one forward/backward pass, epsilon after every epoch, and an optional budget.
fn train_dp(
    o: &Options,
    model: &mut Sequential,
    train: &Dataset,
    test: &Dataset,
    device: &Device,
) -> Result<()> {
    let n = train.len();
    let q = o.batch as f64 / n as f64;
    // The batches must stay as secret as the noise: with --noise-seed both are reproducible
    // (and predictable); otherwise both come from the OS CSPRNG.
    let (noise, mut sampler) = match o.noise_seed {
        Some(seed) => (
            NoiseGenerator::new(seed),
            PoissonSampler::seeded(n, q, seed ^ 0x5A3D_1E55).map_err(DpError::from)?,
        ),
        None => (
            NoiseGenerator::secure()?,
            PoissonSampler::secure(n, q).map_err(DpError::from)?,
        ),
    };
    let header = format!(
        "DP-SGD: noise multiplier {}, clip C = {}, sample rate q = {q:.5}, delta {}; {noise}; \
         {sampler}",
        o.noise, o.clip, o.delta
    );
    let config = DpSgdConfig::new(o.noise, Clipping::flat(o.clip), q, o.batch as f64);
    let mut dp = DpSgd::new(config, noise)?;
    // Checked before anything is printed: a bad delta or budget is refused here, not after the
    // header.
    dp.epsilon(o.delta)?;
    let budget = o
        .epsilon_budget
        .map(|e| Budget::new(e, o.delta))
        .transpose()?;
    println!("{header}");
    if o.noise == 0.0 {
        eprintln!("warning: noise multiplier 0 adds no noise: no privacy (epsilon = inf)");
    }
    let lr = o.lr.unwrap_or(DP_LR);
    let steps_per_epoch = n / o.batch;
    for epoch in 1..=o.epochs {
        let start = Instant::now();
        let (mut loss_sum, mut seen, mut correct) = (0.0f64, 0usize, 0usize);
        for _ in 0..steps_per_epoch {
            if let Some(b) = &budget {
                let allowed = b.allows_next_step(&dp)?;
                if !allowed && dp.steps() == 0 {
                    eprintln!(
                        "the budget allows no step: one step alone spends epsilon = {:.3} at \
                         delta {}, above {}; raise --noise or --epsilon-budget, or lower --batch",
                        dp.epsilon_after(1, o.delta)?.epsilon(),
                        o.delta,
                        o.epsilon_budget.unwrap_or_default()
                    );
                    std::process::exit(1);
                }
                if !allowed {
                    println!(
                        "stopping: the next step would spend more than epsilon = {}",
                        o.epsilon_budget.unwrap_or_default()
                    );
                    return report_epoch(
                        epoch, &dp, o, model, test, device, loss_sum, seen, correct, start,
                    );
                }
            }
            // Poisson sampling: every example joins independently with probability q.
            let chosen = sampler.sample().map_err(DpError::from)?;
            let grads: Vec<Tensor> = if chosen.is_empty() {
                // An empty batch still gets its noise and counts as a step.
                model
                    .params()
                    .iter()
                    .map(|p| {
                        let mut shape = vec![0];
                        shape.extend_from_slice(p.shape());
                        Tensor::zeros(p.dtype(), &shape, device)
                    })
                    .collect::<Result<_>>()?
            } else {
                let (x, y) = train.batch(&chosen, device)?;
                let logits = model.forward(&x)?;
                let ce = softmax_cross_entropy(&logits, &y)?;
                model.backward(&ce.grad_logits)?;
                loss_sum += ce.mean_loss()? * chosen.len() as f64;
                seen += chosen.len();
                correct += predictions(&logits)?
                    .iter()
                    .zip(&y)
                    .filter(|(&p, &l)| p == l as usize)
                    .count();
                model
                    .param_grads(Sink::Keep)?
                    .into_iter()
                    .map(|g| g.per_sample.tensor().cloned())
                    .collect::<Result<_>>()?
            };
            let refs: Vec<&Tensor> = grads.iter().collect();
            let step = dp.step(&refs)?;
            let params = model
                .params()
                .into_iter()
                .zip(&step.gradients)
                .map(|(p, d)| sgd_step(p, d, lr))
                .collect::<Result<Vec<_>>>()?;
            model.set_params(params)?;
        }
        report_epoch(
            epoch, &dp, o, model, test, device, loss_sum, seen, correct, start,
        )?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn report_epoch(
    epoch: usize,
    dp: &DpSgd,
    o: &Options,
    model: &mut Sequential,
    test: &Dataset,
    device: &Device,
    loss_sum: f64,
    seen: usize,
    correct: usize,
    start: Instant,
) -> Result<()> {
    let test_acc = accuracy(model, test, device)?;
    let spent = dp.epsilon(o.delta)?;
    println!(
        "epoch {epoch}: loss {:.4}, train accuracy {:.1}%, test accuracy {:.1}%, epsilon {:.3} ({} steps; holds for Poisson sampling at rate q) ({:.2} s)",
        loss_sum / seen.max(1) as f64,
        100.0 * correct as f64 / seen.max(1) as f64,
        100.0 * test_acc,
        spent.epsilon(),
        dp.steps(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
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
    if o.dp {
        println!(
            "DP-SGD (noisy clipped mean), lr {}, expected batch {}, epochs {}, clip {}",
            o.lr.unwrap_or(DP_LR),
            o.batch,
            o.epochs,
            o.clip
        );
    } else {
        println!(
            "aggregate: {:?}, lr {lr}, batch {}, epochs {}, clip {}",
            o.aggregate, o.batch, o.epochs, o.clip
        );
    }

    let mut rng = Rng(o.seed);
    let centres: Vec<f32> = (0..CLASSES * FEATURES)
        .map(|_| 0.8 * rng.normal())
        .collect();
    let train = Dataset::blobs(TRAIN_EXAMPLES, &centres, &mut rng);
    let test = Dataset::blobs(2048, &centres, &mut rng);
    let mut model = model(o.seed, &device)?;
    println!("chance accuracy: {:.1}%", 100.0 / CLASSES as f64);

    if o.dp {
        return train_dp(o, &mut model, &train, &test, &device);
    }
    let mut order: Vec<usize> = (0..train.len()).collect();
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
            let (directions, scale) = aggregate(&model, o.aggregate, o.clip, chunk.len())?;
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
