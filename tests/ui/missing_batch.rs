use psg::batch_reduce;

#[batch_reduce]
fn twice(x: f32) -> f32 {
    x * 2.0
}

fn main() {}
