use psg::batch_reduce;

#[batch_reduce]
fn discarded(g: Batch) -> f32 {
    g.sum();
    g.mean()
}

#[batch_reduce]
fn early_exit(g: Batch) -> f32 {
    if g.sum() > 0.0 {
        return g.mean();
    }
    g.median()
}

fn main() {}
