use psg::batch_reduce;

#[batch_reduce]
fn vote(g: Batch) -> f32 {
    g.map(|x| x.signum()).sum()
}

fn main() {}
