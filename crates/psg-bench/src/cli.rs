//! The command line: options, their defaults, and parsing shapes such as `256x4M`.

use psg_runtime::DType;

use crate::data::Data;
use crate::error::{BenchError, BenchResult};
use crate::ops;

/// The usage text printed by `--help`.
pub const USAGE: &str = "\
psg-bench: times psg's built-in batch reductions on a CUDA GPU against the copy-bandwidth floor.

USAGE: psg-bench [OPTIONS]

OPTIONS
  --shapes LIST      g shapes BxP, comma-separated; K, M, G are powers of two
                     (default 64x16M,256x4M,1024x1M)
  --dtypes LIST      f32, bf16, f16, f64 (default f32,bf16)
  --ops LIST         operations to time (default: all; see --list-ops)
  --data KIND        the values of g: normal (default), heavy (normal times a scale
                     log-uniform in [0.1, 10)), sparse (90% zeros), ties (multiples of 1/4)
  --runs N           timed runs per op, median reported (default 20)
  --warmup N         untimed runs first (default 3)
  --op-budget-s S    an op whose warm-up run is slower than S/N seconds gets fewer runs
                     (at least 5; the table shows the count) (default 60)
  --bandwidth-mib N  size of the copy-bandwidth buffer, read + written (default 4096)
  --json PATH        also write every number as JSON
  --device N         CUDA device ordinal (default 0)
  --no-jit           skip the JIT latency measurement
  --jit-only         measure only bandwidth and JIT latency
  --jit-rounds N     rounds of the JIT measurement, each compiling every kernel cold (default 3)
  --time-quick-builds  time the tiered JIT's quick builds (what a kernel's first calls run)
                     instead of the optimized builds (turns the disk cache off)
  --release-pool     leave the CUDA memory pool's release threshold at the driver default
                     (default: keep freed memory in the pool, like PyTorch's caching allocator)
  --quick            smoke test: small shapes, 5 runs, 1 warm-up, 256 MiB bandwidth buffer,
                     JIT of a few f32 kernels only (explicit options still win)
  --list-ops         print the operations and their floors, then exit (no GPU needed)
  -h, --help         this text

Timing: CUDA events around each call of the public API (output allocation included), inputs
rotated among copies of g so that L2 cannot serve them. Floor: the bytes an op must move (g read
once, outputs written once; g read twice for clipping) over the measured copy bandwidth.";

/// A shape of g: B samples of P elements. Displayed as `256x4M` (P with a power-of-two suffix
/// where exact, B plain).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Samples (rows).
    pub b: usize,
    /// Elements per sample (columns).
    pub p: usize,
}

impl Shape {
    /// Elements of g.
    pub fn elements(self) -> usize {
        self.b.saturating_mul(self.p)
    }
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}", self.b, fmt_count(self.p))
    }
}

/// `n` with a K/M/G (power-of-two) suffix where it divides exactly: 4194304 -> `4M`.
pub fn fmt_count(n: usize) -> String {
    for (shift, suffix) in [(30, "G"), (20, "M"), (10, "K")] {
        let unit = 1usize << shift;
        if n >= unit && n.is_multiple_of(unit) {
            return format!("{}{suffix}", n / unit);
        }
    }
    n.to_string()
}

/// Parses `4M`, `1024`, `16k` (K, M, G are powers of two).
pub fn parse_count(s: &str) -> Option<usize> {
    let s = s.trim();
    let (digits, shift) = match s.chars().last()?.to_ascii_uppercase() {
        'K' => (&s[..s.len() - 1], 10),
        'M' => (&s[..s.len() - 1], 20),
        'G' => (&s[..s.len() - 1], 30),
        _ => (s, 0),
    };
    let n: usize = digits.parse().ok()?;
    n.checked_mul(1usize << shift)
}

/// Parses `256x4M`.
pub fn parse_shape(s: &str) -> BenchResult<Shape> {
    let bad = || {
        BenchError::Usage(format!(
            "shape {s:?} is not BxP with B, P >= 1 and B x P x 8 bytes (an f64 g) that fit a \
             usize (e.g. 256x4M; K, M, G are powers of two)"
        ))
    };
    let (b, p) = s.split_once(['x', 'X']).ok_or_else(bad)?;
    let (b, p) = (
        parse_count(b).ok_or_else(bad)?,
        parse_count(p).ok_or_else(bad)?,
    );
    // Bytes, not only elements: the suite sizes buffers and floors in bytes of the widest dtype.
    let bytes = b.checked_mul(p).and_then(|n| n.checked_mul(8));
    if b == 0 || p == 0 || bytes.is_none() {
        return Err(bad());
    }
    Ok(Shape { b, p })
}

/// Parses a dtype name.
pub fn parse_dtype(s: &str) -> BenchResult<DType> {
    s.parse::<DType>()
        .map_err(|_| BenchError::Usage(format!("dtype {s:?} is not one of f32, bf16, f16, f64")))
}

fn parse_data(s: &str) -> BenchResult<Data> {
    Data::ALL
        .into_iter()
        .find(|d| d.name().eq_ignore_ascii_case(s.trim()))
        .ok_or_else(|| {
            BenchError::Usage(format!(
                "--data {s:?} is not one of normal, heavy, sparse, ties"
            ))
        })
}

/// Everything the command line chooses.
#[derive(Debug, Clone)]
pub struct Options {
    /// Shapes of g.
    pub shapes: Vec<Shape>,
    /// Element types of g.
    pub dtypes: Vec<DType>,
    /// Names of the operations to time (in the op table's order).
    pub ops: Vec<&'static str>,
    /// What the values of g look like.
    pub data: Data,
    /// Timed runs per op.
    pub runs: usize,
    /// Untimed runs first.
    pub warmup: usize,
    /// Seconds one op's timed runs may take before the run count is lowered.
    pub op_budget_s: f64,
    /// Bytes of the bandwidth buffer (each of source and destination).
    pub bandwidth_bytes: usize,
    /// Where to write JSON.
    pub json: Option<String>,
    /// CUDA device ordinal.
    pub device: usize,
    /// Measure JIT latency.
    pub jit: bool,
    /// Time the ops (false with `--jit-only`).
    pub time_ops: bool,
    /// Kernels the JIT measurement compiles at most (all when `None`).
    pub jit_limit: Option<usize>,
    /// Rounds of the JIT measurement.
    pub jit_rounds: usize,
    /// Time quick builds instead of optimized ones.
    pub time_quick_builds: bool,
    /// Keep freed memory in the CUDA memory pool.
    pub keep_pool: bool,
    /// Smoke-test mode.
    pub quick: bool,
}

/// What the command line asks for.
#[derive(Debug, Clone)]
pub enum Command {
    /// Run the benchmark.
    Run(Box<Options>),
    /// Print the usage text.
    Help,
    /// Print the op table.
    ListOps,
}

const DEFAULT_SHAPES: [Shape; 3] = [
    Shape { b: 64, p: 16 << 20 },
    Shape { b: 256, p: 4 << 20 },
    Shape {
        b: 1024,
        p: 1 << 20,
    },
];
const QUICK_SHAPES: [Shape; 3] = [
    Shape {
        b: 64,
        p: 256 << 10,
    },
    Shape {
        b: 256,
        p: 64 << 10,
    },
    Shape {
        b: 1024,
        p: 16 << 10,
    },
];

fn list<T>(v: &str, f: impl Fn(&str) -> BenchResult<T>) -> BenchResult<Vec<T>> {
    let items: Vec<T> = v
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(f)
        .collect::<BenchResult<_>>()?;
    if items.is_empty() {
        return Err(BenchError::Usage(format!("empty list {v:?}")));
    }
    Ok(items)
}

fn number<T: std::str::FromStr>(flag: &str, v: &str) -> BenchResult<T> {
    v.trim()
        .parse()
        .map_err(|_| BenchError::Usage(format!("{flag} wants a number, got {v:?}")))
}

/// Parses the arguments (without the program name).
pub fn parse(args: impl IntoIterator<Item = String>) -> BenchResult<Command> {
    let mut args = args.into_iter();
    let mut shapes = None;
    let mut dtypes = None;
    let mut op_names = None;
    let (mut runs, mut warmup, mut bandwidth_mib) = (None, None, None);
    let mut op_budget_s = 60.0;
    let mut json = None;
    let mut data = Data::Normal;
    let mut device = 0;
    let mut jit_rounds = crate::jit::ROUNDS;
    let mut time_quick_builds = false;
    let (mut jit, mut time_ops, mut keep_pool, mut quick) = (true, true, true, false);
    while let Some(arg) = args.next() {
        // `--flag=value` and `--flag value` both work.
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| BenchError::Usage(format!("{flag} needs a value")))
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "--list-ops" => return Ok(Command::ListOps),
            "--shapes" => shapes = Some(list(&value()?, parse_shape)?),
            "--dtypes" => dtypes = Some(list(&value()?, parse_dtype)?),
            "--ops" => op_names = Some(list(&value()?, ops::lookup)?),
            "--data" => data = parse_data(&value()?)?,
            "--runs" => runs = Some(number::<usize>("--runs", &value()?)?),
            "--warmup" => warmup = Some(number::<usize>("--warmup", &value()?)?),
            "--op-budget-s" => op_budget_s = number::<f64>("--op-budget-s", &value()?)?,
            "--bandwidth-mib" => {
                bandwidth_mib = Some(number::<usize>("--bandwidth-mib", &value()?)?)
            }
            "--json" => json = Some(value()?),
            "--device" => device = number::<usize>("--device", &value()?)?,
            "--no-jit" => jit = false,
            "--jit-only" => time_ops = false,
            "--jit-rounds" => jit_rounds = number::<usize>("--jit-rounds", &value()?)?,
            "--time-quick-builds" => time_quick_builds = true,
            "--release-pool" => keep_pool = false,
            "--quick" => quick = true,
            other => return Err(BenchError::Usage(format!("unknown argument {other:?}"))),
        }
    }
    let runs = runs.unwrap_or(if quick { 5 } else { 20 });
    if runs == 0 {
        return Err(BenchError::Usage("--runs must be at least 1".into()));
    }
    if jit_rounds == 0 {
        return Err(BenchError::Usage("--jit-rounds must be at least 1".into()));
    }
    if !op_budget_s.is_finite() || op_budget_s <= 0.0 {
        return Err(BenchError::Usage(
            "--op-budget-s must be a number > 0".into(),
        ));
    }
    if !jit && !time_ops {
        return Err(BenchError::Usage(
            "--jit-only and --no-jit together leave nothing to measure but the bandwidth; pick \
             one"
            .into(),
        ));
    }
    let mib = bandwidth_mib.unwrap_or(if quick { 256 } else { 4096 });
    let Some(bandwidth_bytes) = mib.checked_mul(1 << 20).filter(|_| mib > 0) else {
        return Err(BenchError::Usage(format!(
            "--bandwidth-mib {mib} must be at least 1 and its bytes must fit a usize"
        )));
    };
    let dtypes = dtypes.unwrap_or_else(|| vec![DType::F32, DType::BF16]);
    Ok(Command::Run(Box::new(Options {
        shapes: shapes.unwrap_or_else(|| {
            if quick {
                QUICK_SHAPES.to_vec()
            } else {
                DEFAULT_SHAPES.to_vec()
            }
        }),
        dtypes,
        data,
        ops: op_names.unwrap_or_else(|| ops::all().iter().map(|o| o.name).collect()),
        runs,
        warmup: warmup.unwrap_or(if quick { 1 } else { 3 }),
        op_budget_s,
        bandwidth_bytes,
        json,
        device,
        jit,
        time_ops,
        jit_limit: quick.then_some(6),
        jit_rounds,
        time_quick_builds,
        keep_pool,
        quick,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    fn options(s: &str) -> Options {
        match parse(args(s)) {
            Ok(Command::Run(o)) => *o,
            other => panic!("{s}: {other:?}"),
        }
    }

    #[test]
    fn shapes_round_trip() {
        let s = parse_shape("256x4M").unwrap();
        assert_eq!(s, Shape { b: 256, p: 4 << 20 });
        assert_eq!(s.to_string(), "256x4M");
        assert_eq!(parse_shape("1024X1m").unwrap().to_string(), "1024x1M");
        assert_eq!(parse_shape("33x1000003").unwrap().to_string(), "33x1000003");
        assert_eq!(parse_shape("1Kx16K").unwrap().to_string(), "1024x16K");
        // 4G x 1G elements fit a usize but not their bytes: the suite's sizes overflowed.
        for bad in ["256", "0x4M", "x4M", "256x", "256x4Q", "256x-1", "4Gx1G"] {
            assert!(
                matches!(parse_shape(bad), Err(BenchError::Usage(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn defaults_and_flags() {
        let o = options("");
        assert_eq!(o.shapes.len(), 3);
        assert_eq!(o.dtypes, vec![DType::F32, DType::BF16]);
        assert_eq!((o.runs, o.warmup), (20, 3));
        assert_eq!(o.ops.len(), ops::all().len());
        let o = options("--shapes 256x4M --dtypes f32 --ops mean,median --runs 30 --json=x.json");
        assert_eq!(o.shapes, vec![Shape { b: 256, p: 4 << 20 }]);
        assert_eq!(o.dtypes, vec![DType::F32]);
        assert_eq!(o.ops, vec!["mean", "median"]);
        assert_eq!(o.runs, 30);
        assert_eq!(o.json.as_deref(), Some("x.json"));
        let q = options("--quick");
        assert!(q.quick && q.runs == 5 && q.shapes[0].elements() < 1 << 25);
        assert_eq!(options("--quick --runs 7").runs, 7);
        assert_eq!(o.jit_rounds, crate::jit::ROUNDS);
        assert_eq!(options("--jit-only --jit-rounds 1").jit_rounds, 1);
        assert!(!o.time_quick_builds);
        assert!(options("--time-quick-builds").time_quick_builds);
        assert_eq!(o.data, Data::Normal);
        for d in Data::ALL {
            assert_eq!(options(&format!("--data {}", d.name())).data, d);
        }
        assert_eq!(options("--data=Sparse").data, Data::Sparse);
    }

    #[test]
    fn bad_command_lines_are_usage_errors() {
        for bad in [
            "--ops nope",
            "--dtypes f8",
            "--runs",
            "--runs 0",
            "--jit-rounds 0",
            "--frob",
            "--runs x",
            "--data",
            "--data uniform",
            // Bytes that overflow a usize (the shift wrapped to a buffer of 0 bytes before).
            "--bandwidth-mib 17592186044416",
            "--shapes 99999999999x99999999999",
            "--jit-only --no-jit",
        ] {
            assert!(
                matches!(parse(args(bad)), Err(BenchError::Usage(_))),
                "{bad}"
            );
        }
        assert!(matches!(parse(args("--help")), Ok(Command::Help)));
        assert!(matches!(parse(args("--list-ops")), Ok(Command::ListOps)));
    }
}
