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

// `let _` discards a value that has no side effects.
#[batch_reduce]
fn discarded_by_let(g: Batch) -> f32 {
    let _ = g.std();
    g.mean()
}

fn main() {}
