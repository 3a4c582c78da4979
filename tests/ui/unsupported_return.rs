use psg::batch_reduce;

#[batch_reduce]
fn values(g: Batch) -> Vec<f32> {
    g.sum()
}

fn main() {}
