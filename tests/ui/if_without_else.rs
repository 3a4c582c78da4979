use psg::batch_reduce;

#[batch_reduce]
fn clipped(g: Batch, c: f32) -> Batch {
    g.map(|x| if x > c { c })
}

fn main() {}
