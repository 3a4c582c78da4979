//! Whole-tensor helpers for tests of any dtype: values as f64 and exact comparisons.

use psg_runtime::{DType, Tensor};

/// A tensor's elements as raw bits (f32 widened), so comparisons are exact, NaN and -0 included.
pub fn bits(t: &Tensor) -> Vec<u64> {
    match t.dtype() {
        DType::F64 => t
            .to_vec::<f64>()
            .unwrap()
            .iter()
            .map(|x| x.to_bits())
            .collect(),
        _ => t
            .to_vec::<f32>()
            .unwrap()
            .iter()
            .map(|x| u64::from(x.to_bits()))
            .collect(),
    }
}

/// A tensor's elements as f64.
pub fn host(t: &Tensor) -> Vec<f64> {
    match t.dtype() {
        DType::F64 => t.to_vec::<f64>().unwrap(),
        _ => t
            .to_vec::<f32>()
            .unwrap()
            .into_iter()
            .map(f64::from)
            .collect(),
    }
}

/// Asserts bit-identical tensors, naming the first differing element and `what` on failure.
pub fn assert_same_bits(what: &str, left: &Tensor, right: &Tensor) {
    assert_eq!(left.dtype(), right.dtype(), "{what}: dtypes differ");
    assert_eq!(left.shape(), right.shape(), "{what}: shapes differ");
    let (g, c) = (bits(left), bits(right));
    if let Some(i) = (0..g.len()).find(|&i| g[i] != c[i]) {
        let differing = (0..g.len()).filter(|&i| g[i] != c[i]).count();
        panic!(
            "{what}: {differing} of {} elements differ; first at {i}: left {} (bits {:#x}), right {} \
             (bits {:#x})",
            g.len(),
            host(left)[i],
            g[i],
            host(right)[i],
            c[i]
        );
    }
}
