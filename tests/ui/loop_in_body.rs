use psg::batch_reduce;

#[batch_reduce]
fn total(g: Batch) -> f32 {
    for _ in 0..3 {}
    g.sum()
}

fn main() {}
