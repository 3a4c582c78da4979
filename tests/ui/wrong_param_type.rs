use psg::batch_reduce;

#[batch_reduce]
fn top(g: Batch, k: usize) -> f32 {
    g.kth(k)
}

fn main() {}
