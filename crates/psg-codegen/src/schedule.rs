//! Turns a [`Reduction`] into a [`Plan`]: the order in which scalars are bound and columns are
//! read.
//!
//! A `let` that the output never reads (directly, through other lets, or inside a reduction) is
//! bound to 0 and its reductions are never scheduled. Every other [`Scalar::Reduce`] node is
//! hoisted into a numbered temporary, identical reductions
//! share one temporary (the mean inside a variance and the user's own mean are one), and the
//! temporaries are grouped into *waves*: a reduction belongs to the first wave after everything it
//! depends on is known. All streaming reductions (sum, count, min, max) of a wave share one loop
//! over the column; each selection (k-th smallest) runs its own passes. Both emitters walk the same
//! plan, so the CPU and the GPU compute the same things in the same order.

use crate::ir::{Column, Let, Output, Reduce, ReduceOp, Reduction, Scalar};

/// A reduction hoisted out of the expressions that use it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Temp {
    /// The reduction, with nested reductions replaced by [`Scalar::Temp`].
    pub reduce: Reduce,
    /// The wave (1-based) in which it is computed.
    pub wave: usize,
}

/// One step of the generated function.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Bind `lets[i]`.
    Let(usize),
    /// One loop over the column computing these streaming temporaries together.
    Loop(Vec<usize>),
    /// The passes that compute one selection temporary.
    Select(usize),
}

/// The scheduled form of a reduction, what the emitters consume.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The reduction's name, per-sample and scalar inputs.
    pub name: String,
    /// Names of the `PerSample` inputs.
    pub per_sample: Vec<String>,
    /// Names of the scalar parameters.
    pub scalars: Vec<String>,
    /// Bindings, with reductions replaced by temporaries.
    pub lets: Vec<Let>,
    /// The hoisted reductions.
    pub temps: Vec<Temp>,
    /// What to do, in order, before writing the output.
    pub steps: Vec<Step>,
    /// The distinct columns whose ranks some loop computes.
    pub ranks: Vec<Column>,
    /// The output, with reductions replaced by temporaries.
    pub output: Output,
}

impl Plan {
    /// Schedules a reduction.
    pub fn new(reduction: &Reduction) -> Plan {
        let mut hoister = Hoister::default();
        let mut lets = Vec::with_capacity(reduction.lets.len());
        let live = live_lets(reduction);
        for (l, live) in reduction.lets.iter().zip(live) {
            // A let the output never reads, directly or through other lets, is bound to 0: its
            // reductions would cost whole passes over the column for nothing (the DSL cannot
            // warn about it, as rustc would about an unused variable).
            let value = if live {
                hoister.hoist(&l.value)
            } else {
                Scalar::lit(0.0)
            };
            let wave = wave_of(&value, &hoister.temps, &hoister.let_wave);
            hoister.let_wave.push(wave);
            lets.push(Let {
                name: l.name.clone(),
                value,
            });
        }
        let output = match &reduction.output {
            Output::Scalars(values) => {
                Output::Scalars(values.iter().map(|v| hoister.hoist(v)).collect())
            }
            Output::Batch(column) => Output::Batch(hoister.hoist_column(column)),
        };

        let let_wave = hoister.let_wave.clone();
        let output_wave = match &output {
            Output::Scalars(values) => values
                .iter()
                .map(|v| wave_of(v, &hoister.temps, &let_wave))
                .max()
                .unwrap_or(0),
            Output::Batch(column) => column_wave(column, &hoister.temps, &let_wave),
        };
        let last_wave = hoister
            .temps
            .iter()
            .map(|t| t.wave)
            .chain(let_wave.iter().copied())
            .chain(std::iter::once(output_wave))
            .max()
            .unwrap_or(0);

        delay_streaming(&mut hoister.temps, &lets, &let_wave, last_wave);

        let mut steps = Vec::new();
        for wave in 0..=last_wave {
            if wave > 0 {
                let streaming: Vec<usize> = (0..hoister.temps.len())
                    .filter(|&t| {
                        hoister.temps[t].wave == wave && hoister.temps[t].reduce.op.is_streaming()
                    })
                    .collect();
                if !streaming.is_empty() {
                    steps.push(Step::Loop(streaming));
                }
                steps.extend(
                    (0..hoister.temps.len())
                        .filter(|&t| {
                            hoister.temps[t].wave == wave
                                && !hoister.temps[t].reduce.op.is_streaming()
                        })
                        .map(Step::Select),
                );
            }
            steps.extend(
                (0..lets.len())
                    .filter(|&i| let_wave[i] == wave)
                    .map(Step::Let),
            );
        }

        let mut exprs: Vec<&Scalar> = hoister
            .temps
            .iter()
            .flat_map(|t| t.reduce.column.value_and_keep())
            .collect();
        if let Output::Batch(c) = &output {
            exprs.extend(c.value_and_keep());
        }
        let ranks = crate::expr::rank_columns(exprs)
            .into_iter()
            .cloned()
            .collect();

        Plan {
            ranks,
            name: reduction.name.clone(),
            per_sample: reduction.per_sample.clone(),
            scalars: reduction.scalars.clone(),
            lets,
            temps: hoister.temps,
            steps,
            output,
        }
    }

    /// Number of passes a thread-per-column kernel makes over the column (loops, selection
    /// passes, and the output pass of a `Batch` output); 32-bit keys are assumed for selection.
    pub fn passes(&self) -> usize {
        let steps: usize = self
            .steps
            .iter()
            .map(|s| match s {
                Step::Let(_) => 0,
                Step::Loop(_) => 1,
                Step::Select(_) => 33,
            })
            .sum();
        steps + usize::from(matches!(self.output, Output::Batch(_)))
    }
}

#[derive(Default)]
struct Hoister {
    temps: Vec<Temp>,
    /// Waves of the lets hoisted so far (a let can only use earlier ones).
    let_wave: Vec<usize>,
}

impl Hoister {
    fn hoist(&mut self, expr: &Scalar) -> Scalar {
        match expr {
            Scalar::Reduce(r) => {
                let column = self.hoist_column(&r.column);
                let op = match &r.op {
                    ReduceOp::Kth(k) => ReduceOp::Kth(self.hoist(k)),
                    other => other.clone(),
                };
                if op == ReduceOp::Count && column.keep.is_none() {
                    return Scalar::BatchSize;
                }
                let reduce = Reduce { op, column };
                if let Some(i) = self.temps.iter().position(|t| t.reduce == reduce) {
                    return Scalar::Temp(i);
                }
                let wave = 1 + reduce_deps_wave(&reduce, &self.temps, &self.let_wave);
                self.temps.push(Temp { reduce, wave });
                Scalar::Temp(self.temps.len() - 1)
            }
            Scalar::Unary(op, a) => Scalar::Unary(*op, Box::new(self.hoist(a))),
            Scalar::Binary(op, a, b) => {
                Scalar::Binary(*op, Box::new(self.hoist(a)), Box::new(self.hoist(b)))
            }
            Scalar::Select(c, a, b) => Scalar::Select(
                Box::new(self.hoist(c)),
                Box::new(self.hoist(a)),
                Box::new(self.hoist(b)),
            ),
            Scalar::Call(f, args) => Scalar::Call(*f, args.iter().map(|a| self.hoist(a)).collect()),
            Scalar::Rank(c) => Scalar::Rank(Box::new(self.hoist_column(c))),
            leaf => leaf.clone(),
        }
    }

    fn hoist_column(&mut self, column: &Column) -> Column {
        Column {
            value: self.hoist(&column.value),
            keep: column.keep.as_ref().map(|k| self.hoist(k)),
        }
    }
}

/// Moves each streaming temporary into the latest later wave that already has a loop and still
/// comes before every use of it, so that one pass computes it with the others (the count of
/// NaNs in a median joins the pass after the selection instead of making a pass of its own).
/// Nothing is computed differently; only the pass that computes a temporary changes.
fn delay_streaming(temps: &mut [Temp], lets: &[Let], let_wave: &[usize], last_wave: usize) {
    for t in 0..temps.len() {
        if !temps[t].reduce.op.is_streaming() {
            continue;
        }
        // The output is evaluated after the last wave, so only temporaries and lets bound it.
        let mut bound = last_wave;
        for other in temps.iter() {
            if reduce_uses(&other.reduce, t) {
                bound = bound.min(other.wave.saturating_sub(1));
            }
        }
        for (l, wave) in lets.iter().zip(let_wave) {
            if uses_temp(&l.value, t) {
                bound = bound.min(*wave);
            }
        }
        let has_loop = |v: usize, temps: &[Temp]| {
            temps
                .iter()
                .enumerate()
                .any(|(u, x)| u != t && x.wave == v && x.reduce.op.is_streaming())
        };
        if let Some(v) = (temps[t].wave + 1..=bound)
            .rev()
            .find(|&v| has_loop(v, temps))
        {
            temps[t].wave = v;
        }
    }
}

fn uses_temp(expr: &Scalar, t: usize) -> bool {
    matches!(expr, Scalar::Temp(u) if *u == t)
        || expr.children().into_iter().any(|c| uses_temp(c, t))
}

fn reduce_uses(reduce: &Reduce, t: usize) -> bool {
    reduce.column.value_and_keep().any(|e| uses_temp(e, t))
        || matches!(&reduce.op, ReduceOp::Kth(k) if uses_temp(k, t))
}

/// Which lets the output reads, directly or through other lets, inside reductions included.
fn live_lets(reduction: &Reduction) -> Vec<bool> {
    let mut live = vec![false; reduction.lets.len()];
    let mut stack: Vec<&Scalar> = match &reduction.output {
        Output::Scalars(values) => values.iter().collect(),
        Output::Batch(column) => column.value_and_keep().collect(),
    };
    while let Some(x) = stack.pop() {
        match x {
            Scalar::Local(i) => {
                if let Some(false) = live.get(*i) {
                    live[*i] = true;
                    stack.push(&reduction.lets[*i].value);
                }
            }
            Scalar::Reduce(r) => {
                stack.extend(r.column.value_and_keep());
                if let ReduceOp::Kth(k) = &r.op {
                    stack.push(k);
                }
            }
            other => stack.extend(other.children()),
        }
    }
    live
}

/// The wave after which everything a reduction reads (temporaries and lets) is known.
fn reduce_deps_wave(reduce: &Reduce, temps: &[Temp], let_wave: &[usize]) -> usize {
    let mut wave = column_wave(&reduce.column, temps, let_wave);
    if let ReduceOp::Kth(k) = &reduce.op {
        wave = wave.max(wave_of(k, temps, let_wave));
    }
    wave
}

fn wave_of(expr: &Scalar, temps: &[Temp], let_wave: &[usize]) -> usize {
    match expr {
        Scalar::Temp(i) => temps[*i].wave,
        Scalar::Local(i) => let_wave[*i],
        other => other
            .children()
            .into_iter()
            .map(|c| wave_of(c, temps, let_wave))
            .max()
            .unwrap_or(0),
    }
}

fn column_wave(column: &Column, temps: &[Temp], let_wave: &[usize]) -> usize {
    let value = wave_of(&column.value, temps, let_wave);
    let keep = column
        .keep
        .as_ref()
        .map_or(0, |k| wave_of(k, temps, let_wave));
    value.max(keep)
}
