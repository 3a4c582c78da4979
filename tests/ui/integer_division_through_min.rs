use psg::batch_reduce;

// `a.min(3)` of an integer is an integer in Rust, so `/ 2` divides integers (3).
#[batch_reduce]
fn capped(g: Batch) -> f32 {
    let a = 7;
    g.map(|x| x * (a.min(3) / 2)).sum()
}

fn main() {}
