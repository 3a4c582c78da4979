//! Device selection and the environment: a misspelt variable is an error, never a silent choice.
//! One test, because it sets process-wide variables.

use psg_runtime::{select_device, try_select_device, Error};

#[test]
fn a_misspelt_psg_jit_is_an_error_not_a_fallback() {
    std::env::remove_var("PSG_DEVICE");
    std::env::set_var("PSG_JIT", "optimised");
    match try_select_device() {
        Err(Error::InvalidParameter(msg)) => {
            assert!(msg.contains("PSG_JIT=\"optimised\""), "{msg}");
            assert!(msg.contains("tiered, optimized, quick"), "{msg}");
        }
        other => panic!("expected an InvalidParameter error, got {other:?}"),
    }
    // select_device never fails: the CPU, with the reason.
    let choice = select_device();
    assert!(choice.device.is_cpu());
    assert!(choice.reason.contains("PSG_JIT"), "{}", choice.reason);
    // The CPU asked for does not need PSG_JIT.
    std::env::set_var("PSG_DEVICE", "cpu");
    assert!(try_select_device().is_ok_and(|c| c.device.is_cpu()));
    // Any case and spacing of a known mode is accepted.
    std::env::remove_var("PSG_DEVICE");
    std::env::set_var("PSG_JIT", " Optimized ");
    if let Err(e) = try_select_device() {
        assert!(!e.to_string().contains("PSG_JIT"), "{e}");
    }
    // A value that is not UTF-8 is an error too (it read as unset: `auto`, tiered).
    use std::os::unix::ffi::OsStrExt;
    let mangled = std::ffi::OsStr::from_bytes(b"cpu\xff");
    std::env::remove_var("PSG_JIT");
    std::env::set_var("PSG_DEVICE", mangled);
    match try_select_device() {
        Err(Error::InvalidParameter(msg)) => assert!(msg.contains("PSG_DEVICE"), "{msg}"),
        other => panic!("expected an InvalidParameter error, got {other:?}"),
    }
    std::env::remove_var("PSG_DEVICE");
    std::env::set_var("PSG_JIT", mangled);
    match try_select_device() {
        Err(Error::InvalidParameter(msg)) => assert!(msg.contains("not valid UTF-8"), "{msg}"),
        other => panic!("expected an InvalidParameter error, got {other:?}"),
    }
    std::env::remove_var("PSG_JIT");
}
