use psg::batch_reduce;

// The error points at the method whose arguments are wrong, not at the receiver.
#[batch_reduce]
fn middle(g: Batch) -> f32 {
    g.map(|x| x * 2.0).median(0.5)
}

fn main() {}
