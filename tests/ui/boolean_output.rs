use psg::batch_reduce;

#[batch_reduce]
fn positive(g: Batch) -> f32 {
    g.sum() > 0.0
}

fn main() {}
