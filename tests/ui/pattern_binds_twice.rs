use psg::batch_reduce;

// Rust refuses a name bound twice in one pattern (E0416).
#[batch_reduce]
fn twice(g: Batch) -> f32 {
    let (a, a) = (g.mean(), g.std());
    a
}

fn main() {}
