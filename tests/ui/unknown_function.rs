use psg::batch_reduce;

#[batch_reduce]
fn soft(g: Batch) -> f32 {
    g.map(|x| tanh(x)).sum()
}

fn main() {}
