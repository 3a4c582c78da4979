use psg::batch_reduce;

// A `let` annotated with an integer type: Rust would compute `a / 2` in integers.
#[batch_reduce]
fn typed_let(g: Batch) -> f32 {
    let a: i32 = 7;
    g.map(|x| x * a).sum()
}

// A tuple of lets, one of them an integer.
#[batch_reduce]
fn typed_tuple(g: Batch) -> f32 {
    let (a, b): (f32, u32) = (7.0, 7);
    g.map(|x| x * a * b).sum()
}

// A column's element annotated as an integer.
#[batch_reduce]
fn typed_element(g: Batch) -> f32 {
    g.map(|x: i32| x / 2).sum()
}

// An integer-suffixed literal.
#[batch_reduce]
fn suffixed(g: Batch) -> f32 {
    g.map(|x| x * 2u8).sum()
}

// powi's exponent past i32.
#[batch_reduce]
fn huge_power(g: Batch) -> f32 {
    g.map(|x| x.powi(3000000000)).sum()
}

// `return` with its `;`.
#[batch_reduce]
fn returned(g: Batch) -> f32 {
    return g.sum();
}

fn main() {}
