use psg::batch_reduce;

// `n` is bound to integer literals, so Rust would compute `n / 2` in integers (3), as it would
// `7 / 2`; a reduction's scalars are floats. A `let` of a float literal, or a name shadowed by
// one (or by a closure's element), divides as a float, and is accepted.
#[batch_reduce]
fn halves(g: Batch) -> (f32, f32) {
    let h = 7.0;
    let m = 7;
    let m = m * 1.0;
    let x = 7;
    let n = -(3 + 4);
    let twice = n * 2;
    (g.map(|x| x * (h / 2) * (m / 2) * (x / 2)).sum(), g.map(|v| v * (twice / 2)).sum())
}

fn main() {}
