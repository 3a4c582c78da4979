use psg::batch_reduce;

// `+=` as a statement: the same message as `m = m + 1.0;`, not "this statement's value is dropped".
#[batch_reduce]
fn shifted(g: Batch) -> f32 {
    let m = g.mean();
    m += 1.0;
    m
}

fn main() {}
