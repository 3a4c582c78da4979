use psg::batch_reduce;

#[batch_reduce]
fn total(g: Batch) -> f32 {
    let mut acc = 0.0;
    g.sum() + acc
}

fn main() {}
