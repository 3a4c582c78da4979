use psg::batch_reduce;

#[batch_reduce]
fn pairwise(g: Batch) -> f32 {
    g.map(|x| g.map(|y| (x - y).abs()).sum()).sum()
}

fn main() {}
