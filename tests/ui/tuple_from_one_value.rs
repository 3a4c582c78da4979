use psg::batch_reduce;

// The signature returns one value; the body ends with two.
#[batch_reduce]
fn moments(g: Batch) -> f32 {
    (g.mean(), g.std())
}

fn main() {}
