use psg::batch_reduce;

#[batch_reduce]
fn rank_sum(g: Batch) -> f32 {
    g.with_rank().sum()
}

fn main() {}
