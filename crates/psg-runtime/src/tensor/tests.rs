use super::*;
use half::{bf16, f16};

fn round_trip<T: Element + PartialEq + std::fmt::Debug>(values: Vec<T>) {
    let shape = [2, values.len() / 2];
    let t = Tensor::from_slice(&values, &shape, &Device::Cpu).unwrap();
    assert_eq!(t.dtype(), T::DTYPE);
    assert_eq!(t.shape(), &shape);
    assert_eq!(t.len(), values.len());
    assert_eq!(t.to_vec::<T>().unwrap(), values);
    assert_eq!(t.as_cpu_slice::<T>().unwrap(), &values[..]);
    let moved = t.to_device(&Device::Cpu).unwrap();
    assert_eq!(moved.to_vec::<T>().unwrap(), values);
    let owned = Tensor::from_vec(values.clone(), &shape, &Device::Cpu).unwrap();
    assert_eq!(owned.to_vec::<T>().unwrap(), values);
}

#[test]
fn cpu_round_trips_for_every_dtype() {
    let xs = [1.5f32, -0.0, f32::INFINITY, 3.25, -7.0, 1e-3];
    round_trip(xs.to_vec());
    round_trip(xs.iter().map(|&x| f64::from(x)).collect());
    round_trip(xs.iter().map(|&x| f16::from_f32(x)).collect());
    round_trip(xs.iter().map(|&x| bf16::from_f32(x)).collect());
}

#[test]
fn nan_bits_survive() {
    let nan = f32::from_bits(0x7fc0_1234);
    let t = Tensor::from_slice(&[nan, 1.0], &[2], &Device::Cpu).unwrap();
    assert_eq!(t.to_vec::<f32>().unwrap()[0].to_bits(), 0x7fc0_1234);
}

#[test]
fn zeros_for_every_dtype() {
    for dtype in DType::ALL {
        let t = Tensor::zeros(dtype, &[3, 0, 2], &Device::Cpu).unwrap();
        assert!(t.is_empty());
        assert_eq!(t.size_in_bytes(), 0);
        let t = Tensor::zeros(dtype, &[2, 3], &Device::Cpu).unwrap();
        assert_eq!(t.size_in_bytes(), 6 * dtype.size_in_bytes());
    }
    let t = Tensor::zeros(DType::BF16, &[4], &Device::Cpu).unwrap();
    assert_eq!(t.to_vec::<bf16>().unwrap(), vec![bf16::ZERO; 4]);
}

#[test]
fn shape_mismatch_is_a_shape_error() {
    let e = Tensor::from_slice(&[1.0f32, 2.0, 3.0], &[2, 2], &Device::Cpu).unwrap_err();
    assert!(matches!(e, Error::Shape(_)), "{e}");
    assert!(e.to_string().contains("[2, 2]"), "{e}");
    let e = Tensor::zeros(DType::F32, &[usize::MAX, 2], &Device::Cpu).unwrap_err();
    assert!(matches!(e, Error::Shape(_)), "{e}");
}

#[test]
fn wrong_element_type_is_a_dtype_error() {
    let t = Tensor::from_slice(&[1.0f32, 2.0], &[2], &Device::Cpu).unwrap();
    assert!(matches!(t.to_vec::<f64>(), Err(Error::DType(_))));
    assert!(matches!(t.as_cpu_slice::<f16>(), Err(Error::DType(_))));
}

#[test]
fn batch_and_per_sample_dimensions() {
    let t = Tensor::zeros(DType::F32, &[4, 3, 5], &Device::Cpu).unwrap();
    assert_eq!(t.batch_size().unwrap(), 4);
    assert_eq!(t.per_sample_len(), 15);
    assert_eq!(t.rank(), 3);
    let v = Tensor::zeros(DType::F32, &[4], &Device::Cpu).unwrap();
    assert_eq!(v.per_sample_len(), 1);
    let s = Tensor::from_slice(&[2.0f32], &[], &Device::Cpu).unwrap();
    assert_eq!(s.len(), 1);
    assert_eq!(s.per_sample_len(), 1);
    assert!(matches!(s.batch_size(), Err(Error::Shape(_))));
    let empty = Tensor::zeros(DType::F32, &[0, 7], &Device::Cpu).unwrap();
    assert_eq!(empty.batch_size().unwrap(), 0);
    assert_eq!(empty.per_sample_len(), 7);
}

#[test]
fn reshape_shares_and_checks() {
    let t = Tensor::from_slice(&[1.0f64, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3], &Device::Cpu).unwrap();
    let r = t.reshape(&[3, 2]).unwrap();
    assert_eq!(r.shape(), &[3, 2]);
    assert_eq!(r.to_vec::<f64>().unwrap(), t.to_vec::<f64>().unwrap());
    assert!(matches!(t.reshape(&[4]), Err(Error::Shape(_))));
}

#[test]
fn cpu_tensors_have_no_device_pointer() {
    let t = Tensor::zeros(DType::F32, &[2], &Device::Cpu).unwrap();
    assert!(matches!(t.cuda_ptr(), Err(Error::DeviceMismatch(_))));
    assert!(!t.is_borrowed());
    assert!(t.device().is_cpu());
    assert_eq!(
        format!("{t:?}"),
        "Tensor { dtype: F32, shape: [2], device: \"cpu\", borrowed: false }"
    );
}

/// A shape whose bytes do not fit the address space is an error, not `vec!`'s panic (or, past
/// what the allocator gives, its abort).
#[test]
fn host_tensors_too_large_for_memory_are_errors() {
    let huge = [
        (DType::F64, vec![usize::MAX / 4]),
        (DType::F32, vec![usize::MAX / 2]),
        (DType::BF16, vec![3, usize::MAX / 4]),
    ];
    for (dtype, shape) in huge {
        for t in [
            Tensor::zeros(dtype, &shape, &Device::Cpu),
            Tensor::uninit(dtype, &shape, &Device::Cpu),
        ] {
            match t {
                Err(Error::HostMemory(msg)) => assert!(msg.contains("smaller tensor"), "{msg}"),
                other => panic!("{dtype} {shape:?}: {other:?}"),
            }
        }
    }
}

#[test]
fn tensors_print_their_values_when_few() {
    let t = Tensor::from_slice(&[1.0f32, -2.5, 3.0, 0.0, 5.0, 6.0], &[2, 3], &Device::Cpu).unwrap();
    assert_eq!(
        t.to_string(),
        "tensor(f32, [2, 3], cpu) [1, -2.5, 3, 0, 5, 6]"
    );
    let h = Tensor::from_slice(&[half::bf16::from_f32(0.5)], &[1], &Device::Cpu).unwrap();
    assert_eq!(h.to_string(), "tensor(bf16, [1], cpu) [0.5]");
    // Each value in its own dtype's shortest form, not widened to f64; precision is honoured.
    let tenth = Tensor::from_slice(&[0.1f32, f32::MAX], &[2], &Device::Cpu).unwrap();
    assert_eq!(
        tenth.to_string(),
        "tensor(f32, [2], cpu) [0.1, 340282350000000000000000000000000000000]"
    );
    assert_eq!(
        format!("{tenth:.2}").split_once(") [").map(|(_, v)| v),
        Some("0.10, 340282346638528859811704183484516925440.00]")
    );
    let f16 = Tensor::from_slice(&[half::f16::from_f32(0.1)], &[1], &Device::Cpu).unwrap();
    assert_eq!(f16.to_string(), "tensor(f16, [1], cpu) [0.099975586]"); // as half prints it
    let big = Tensor::zeros(DType::F64, &[10, 10], &Device::Cpu).unwrap();
    assert_eq!(big.to_string(), "tensor(f64, [10, 10], cpu) of 100 values");
    assert_eq!(t.device(), Device::Cpu);
}
