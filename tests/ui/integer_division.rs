use psg::batch_reduce;

// Rust would compute 7 / 2 in integers (3); a reduction's scalars are floats. (`7f32 / 2f32` is
// a float division in Rust, and accepted.)
#[batch_reduce]
fn halves(g: Batch) -> f32 {
    g.map(|x| x * (7f32 / 2f32) * (7 / 2)).sum()
}

fn main() {}
