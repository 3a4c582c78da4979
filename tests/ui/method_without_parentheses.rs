use psg::batch_reduce;

// `x.abs` is a field access in Rust; the method is `x.abs()`.
#[batch_reduce]
fn magnitude(g: Batch) -> f32 {
    g.map(|x| x.abs).sum()
}

fn main() {}
