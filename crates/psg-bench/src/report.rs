//! The printed summary (the op table last) and the JSON file.

use std::fmt::Write;

use crate::bandwidth::Bandwidth;
use crate::cli::Options;
use crate::data::Data;
use crate::error::{BenchError, BenchResult};
use crate::jit::{JitReport, JitSample};
use crate::json::Json;
use crate::ops;
use crate::suite::OpRow;
use crate::timing::Stats;

/// Everything one run of the benchmark measured.
pub struct Report<'a> {
    /// The device, in words.
    pub device: String,
    /// The options it ran with.
    pub opts: &'a Options,
    /// The copy bandwidth.
    pub bandwidth: Bandwidth,
    /// JIT latency, or why it was not measured.
    pub jit: Result<JitReport, String>,
    /// One row per op, shape and dtype.
    pub rows: Vec<OpRow>,
}

fn stats_json(s: &Stats) -> Json {
    Json::obj([
        ("median_ms", s.median_ms.into()),
        ("min_ms", s.min_ms.into()),
        ("max_ms", s.max_ms.into()),
        ("runs", s.runs.into()),
        ("capped", Json::Bool(s.capped)),
    ])
}

fn bandwidth_text(bw: &Bandwidth) -> String {
    let mut s = format!(
        "copy bandwidth (read + written, {} MiB buffer): copy kernel {:.1} GB/s (median of {})",
        bw.buffer_bytes >> 20,
        bw.kernel_gbps,
        bw.kernel.runs
    );
    if let Some(m) = bw.memcpy_gbps {
        let _ = write!(s, ", cuMemcpyDtoD {m:.1} GB/s");
    }
    let _ = write!(s, "; floors use {:.1} GB/s", bw.floor_gbps());
    s
}

fn jit_text(jit: &Result<JitReport, String>) -> String {
    match jit {
        Err(why) => format!("JIT latency: not measured ({why})"),
        Ok(j) => {
            let slowest = |ms: fn(&JitSample) -> f64| {
                j.samples
                    .iter()
                    .max_by(|a, b| ms(a).total_cmp(&ms(b)))
                    .map_or("", |s| s.kernel.as_str())
            };
            let mut s = format!(
                "JIT latency over {} kernels, {} rounds into fresh caches (a kernel's figure is \
                 the median of its rounds): first use (tiered JIT: quick build, compile + load) \
                 median {:.1} ms, max {:.1} ms ({}); optimized build (compile + load + cache \
                 write; in the background when tiered) median {:.1} ms, max {:.1} ms ({}); \
                 largest single optimized compile {:.1} ms ({}); disk-cache load median {:.2} \
                 ms, max {:.2} ms",
                j.samples.len(),
                j.rounds,
                j.quick_median_ms,
                j.quick_max_ms,
                slowest(|s| s.quick_ms),
                j.compile_median_ms,
                j.compile_max_ms,
                slowest(|s| s.compile_ms),
                j.compile_worst_ms,
                j.compile_worst_kernel,
                j.disk_median_ms,
                j.disk_max_ms
            );
            if !j.origins_as_expected {
                s.push_str(
                    "\n  warning: not every quick prepare made a quick build, every optimized one \
                     compiled and every later one read the disk cache (see the JSON's \
                     per-kernel origins)",
                );
            }
            s
        }
    }
}

fn fmt_ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

/// The op table.
fn table(rows: &[OpRow]) -> String {
    let mut s = format!(
        "{:<22} {:<10} {:<5} {:>10} {:>10} {:>8} {:>5}\n",
        "op", "shape", "dtype", "psg ms", "floor ms", "x floor", "runs"
    );
    for r in rows {
        let (ms, x, runs) = match r.stats {
            Some(st) => (
                fmt_ms(st.median_ms),
                format!("{:.2}", st.median_ms / r.floor_ms),
                format!("{}{}", st.runs, if st.capped { "*" } else { "" }),
            ),
            None => ("FAILED".into(), "-".into(), "-".into()),
        };
        let _ = writeln!(
            s,
            "{:<22} {:<10} {:<5} {:>10} {:>10} {:>8} {:>5}",
            r.op,
            r.shape.to_string(),
            r.dtype.name(),
            ms,
            fmt_ms(r.floor_ms),
            x,
            runs
        );
    }
    s
}

impl Report<'_> {
    /// The summary printed at the end: bandwidth, JIT, failures and notes, then the op table.
    pub fn text(&self) -> String {
        let mut s = format!("psg-bench on {}\n", self.device);
        let _ = writeln!(s, "{}", bandwidth_text(&self.bandwidth));
        let _ = writeln!(s, "{}", jit_text(&self.jit));
        if self.opts.data != Data::Normal {
            let _ = writeln!(s, "data: {} (--data)", self.opts.data.name());
        }
        let failed: Vec<&OpRow> = self.rows.iter().filter(|r| r.error.is_some()).collect();
        for r in &failed {
            let _ = writeln!(
                s,
                "FAILED {} g[{}] {}: {}",
                r.op,
                r.shape,
                r.dtype,
                r.error.as_deref().unwrap_or("")
            );
        }
        if self.rows.is_empty() {
            return s;
        }
        let mut notes: Vec<String> = Vec::new();
        for op in ops::all() {
            if !op.note.is_empty() && self.rows.iter().any(|r| r.op == op.name) {
                notes.push(format!("{}: {}", op.name, op.note));
            }
        }
        if self
            .rows
            .iter()
            .any(|r| r.stats.is_some_and(|st| st.capped))
        {
            notes.push("runs marked * were lowered by --op-budget-s (slow op)".into());
        }
        notes.push(format!(
            "time: median of CUDA-event timings of the psg-ops call (output allocation \
             included), inputs rotated among copies of g; floor: bytes moved over {:.1} GB/s",
            self.bandwidth.floor_gbps()
        ));
        s.push_str("notes:\n");
        for n in notes {
            let _ = writeln!(s, "  * {n}");
        }
        s.push('\n');
        s.push_str(&table(&self.rows));
        s
    }

    /// Everything as JSON.
    pub fn json(&self) -> Json {
        let bw = &self.bandwidth;
        let bandwidth = Json::obj([
            ("buffer_bytes", bw.buffer_bytes.into()),
            ("bytes_per_run", (2 * bw.buffer_bytes).into()),
            ("kernel_gbps", bw.kernel_gbps.into()),
            ("kernel", stats_json(&bw.kernel)),
            ("memcpy_gbps", Json::opt(bw.memcpy_gbps)),
            ("memcpy", bw.memcpy.as_ref().map_or(Json::Null, stats_json)),
            ("gbps", bw.floor_gbps().into()),
        ]);
        let jit = match &self.jit {
            Err(why) => Json::obj([("error", Json::str(why.as_str()))]),
            Ok(j) => Json::obj([
                ("kernels", j.samples.len().into()),
                ("quick_median_ms", j.quick_median_ms.into()),
                ("quick_max_ms", j.quick_max_ms.into()),
                ("compile_median_ms", j.compile_median_ms.into()),
                ("compile_max_ms", j.compile_max_ms.into()),
                ("rounds", j.rounds.into()),
                ("compile_worst_ms", j.compile_worst_ms.into()),
                (
                    "compile_worst_kernel",
                    Json::str(j.compile_worst_kernel.as_str()),
                ),
                ("disk_median_ms", j.disk_median_ms.into()),
                ("disk_max_ms", j.disk_max_ms.into()),
                ("origins_as_expected", Json::Bool(j.origins_as_expected)),
                (
                    "per_kernel",
                    Json::Arr(
                        j.samples
                            .iter()
                            .map(|k| {
                                Json::obj([
                                    ("kernel", Json::str(k.kernel.as_str())),
                                    ("quick_ms", k.quick_ms.into()),
                                    (
                                        "quick_rounds_ms",
                                        Json::Arr(
                                            k.quick_rounds_ms.iter().map(|&ms| ms.into()).collect(),
                                        ),
                                    ),
                                    ("quick_origin", Json::str(format!("{:?}", k.quick_origin))),
                                    ("compile_ms", k.compile_ms.into()),
                                    (
                                        "compile_rounds_ms",
                                        Json::Arr(
                                            k.compile_rounds_ms
                                                .iter()
                                                .map(|&ms| ms.into())
                                                .collect(),
                                        ),
                                    ),
                                    (
                                        "compile_origin",
                                        Json::str(format!("{:?}", k.compile_origin)),
                                    ),
                                    ("disk_ms", k.disk_ms.into()),
                                    ("disk_origin", Json::str(format!("{:?}", k.disk_origin))),
                                ])
                            })
                            .collect(),
                    ),
                ),
            ]),
        };
        let results = self.rows.iter().map(|r| {
            let note = ops::find(r.op).map_or("", |o| o.note);
            Json::obj([
                ("op", Json::str(r.op)),
                ("shape", Json::str(r.shape.to_string())),
                ("b", r.shape.b.into()),
                ("p", r.shape.p.into()),
                ("dtype", Json::str(r.dtype.name())),
                ("ms", Json::opt(r.stats.map(|s| s.median_ms))),
                ("stats", r.stats.as_ref().map_or(Json::Null, stats_json)),
                ("copies", r.copies.into()),
                ("floor_bytes", r.floor_bytes.into()),
                ("floor_ms", r.floor_ms.into()),
                ("x_floor", Json::opt(r.x_floor())),
                ("note", Json::str(note)),
                ("error", r.error.as_deref().map_or(Json::Null, Json::str)),
            ])
        });
        let o = self.opts;
        Json::obj([
            ("tool", Json::str("psg-bench")),
            ("version", Json::str(env!("CARGO_PKG_VERSION"))),
            ("device", Json::str(self.device.as_str())),
            ("quick", Json::Bool(o.quick)),
            ("data", Json::str(o.data.name())),
            ("runs", o.runs.into()),
            ("warmup", o.warmup.into()),
            ("keep_pool", Json::Bool(o.keep_pool)),
            ("bandwidth", bandwidth),
            ("jit", jit),
            ("results", Json::Arr(results.collect())),
        ])
    }

    /// Writes [`Report::json`] to `path`.
    pub fn write_json(&self, path: &str) -> BenchResult<()> {
        std::fs::write(path, format!("{}\n", self.json())).map_err(|source| BenchError::Io {
            path: path.to_string(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{self, Command, Shape};
    use crate::jit::JitSample;
    use crate::suite::OpRow;
    use psg_runtime::{DType, KernelOrigin};

    fn stats(ms: f64) -> Stats {
        Stats {
            median_ms: ms,
            min_ms: ms * 0.9,
            max_ms: ms * 1.2,
            runs: 20,
            capped: false,
        }
    }

    /// A report with made-up numbers: its text ends with the table, and its JSON carries every
    /// field combine.py reads. `PSG_BENCH_EXAMPLE_JSON=path` writes the JSON there (to try
    /// combine.py without a GPU).
    #[test]
    fn text_ends_with_the_table_and_json_has_the_fields() {
        let Ok(Command::Run(opts)) = cli::parse(Vec::new()) else {
            panic!("default options")
        };
        let bandwidth = Bandwidth {
            buffer_bytes: 4 << 30,
            kernel: stats(2.9),
            kernel_gbps: 2962.0,
            memcpy: Some(stats(3.0)),
            memcpy_gbps: Some(2863.0),
        };
        let shape = Shape { b: 256, p: 4 << 20 };
        let mut rows = Vec::new();
        for (i, name) in ["mean", "median_low", "clipped_mean"]
            .into_iter()
            .enumerate()
        {
            let op = crate::ops::find(name).unwrap();
            let floor_bytes = op.floor_bytes(shape.b, shape.p, 4);
            rows.push(OpRow {
                op: op.name,
                shape,
                dtype: DType::F32,
                copies: 3,
                stats: (i != 1).then(|| stats(1.5 + i as f64)),
                error: (i == 1).then(|| "CUDA driver call \"x\" failed".to_string()),
                floor_bytes,
                floor_ms: bandwidth.floor_ms(floor_bytes),
            });
        }
        let sample = JitSample {
            kernel: "mean_f32".into(),
            quick_ms: 40.0,
            quick_rounds_ms: vec![40.0, 41.0, 39.0],
            quick_origin: KernelOrigin::Quick,
            compile_ms: 120.0,
            compile_rounds_ms: vec![120.0, 119.0, 640.0],
            compile_origin: KernelOrigin::Compiled,
            disk_ms: 0.4,
            disk_origin: KernelOrigin::Disk,
        };
        let report = Report {
            device: "CUDA device 0: NVIDIA H100 80GB HBM3 (sm_90), NVRTC 13.0".into(),
            opts: &opts,
            bandwidth,
            jit: Ok(crate::jit::JitReport {
                samples: vec![sample],
                rounds: 3,
                quick_median_ms: 40.0,
                quick_max_ms: 40.0,
                compile_median_ms: 120.0,
                compile_max_ms: 120.0,
                compile_worst_ms: 640.0,
                compile_worst_kernel: "mean_f32".into(),
                disk_median_ms: 0.4,
                disk_max_ms: 0.4,
                origins_as_expected: true,
            }),
            rows,
        };
        let text = report.text();
        let last = text.lines().last().unwrap();
        assert!(last.starts_with("clipped_mean"), "{text}");
        assert!(text.contains("FAILED median_low"), "{text}");
        assert!(text.contains("reads g twice"), "{text}");
        assert!(!text.contains("data:"), "{text}");
        let json = report.json().to_string();
        for field in [
            "\"results\"",
            "\"op\": \"mean\"",
            "\"b\": 256",
            "\"p\": 4194304",
            "\"dtype\": \"f32\"",
            "\"floor_bytes\"",
            "\"gbps\": 2962",
            "\"compile_median_ms\"",
            "\"quick_max_ms\": 40",
            "\"quick_origin\": \"Quick\"",
            "\"compile_worst_ms\": 640",
            "\"compile_rounds_ms\": [120,",
            "\"error\": null",
            "\"data\": \"normal\"",
        ] {
            assert!(json.contains(field), "{field} missing in {json}");
        }
        if let Ok(path) = std::env::var("PSG_BENCH_EXAMPLE_JSON") {
            report.write_json(&path).unwrap();
        }
        println!("{text}");
    }
}
