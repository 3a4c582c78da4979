use psg::batch_reduce;

// Parameters are taken by value.
#[batch_reduce]
fn total(g: &Batch) -> f32 {
    g.sum()
}

fn main() {}
