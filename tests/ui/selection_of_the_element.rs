use psg::batch_reduce;

#[batch_reduce]
fn quantile_of_each(g: Batch) -> f32 {
    g.map(|x| g.quantile(x)).sum()
}

#[batch_reduce]
fn rank_of_ranked(g: Batch) -> Batch {
    g.with_rank()
        .filter(|x, r| r >= 1.0)
        .map(|x, r| x)
        .with_rank()
        .map(|x, r| r)
}

fn main() {}
