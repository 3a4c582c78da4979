use psg::batch_reduce;

// After `zip`, the closure takes the values as separate parameters, not the iterator's tuple.
#[batch_reduce]
fn weighted(g: Batch, w: PerSample) -> f32 {
    g.zip(w).map(|(x, s)| x * s).sum()
}

fn main() {}
