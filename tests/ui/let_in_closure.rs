use psg::batch_reduce;

#[batch_reduce]
fn shifted_square_mean(g: Batch) -> f32 {
    g.map(|x| {
        let y = x * x;
        y + 1.0
    })
    .mean()
}

fn main() {}
