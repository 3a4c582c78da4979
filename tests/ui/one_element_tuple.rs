use psg::batch_reduce;

#[batch_reduce]
fn mean_alone(g: Batch) -> (f32,) {
    (g.mean(),)
}

fn main() {}
