use psg::batch_reduce;

#[batch_reduce]
fn spread(g: Batch) -> f32 {
    g.interquartile_range()
}

fn main() {}
