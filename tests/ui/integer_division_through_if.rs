use psg::batch_reduce;

// Every value of the `if` is an integer literal, so Rust types `a` as an integer and computes
// `a / 2` in integers (3); a reduction's scalars are floats (3.5).
#[batch_reduce]
fn halves(g: Batch) -> f32 {
    let a = if g.count() > 1.0 { 7 } else { 9 };
    g.map(|x| x * (a / 2)).sum()
}

fn main() {}
