//! The `#[batch_reduce]` macro's compile errors: each misuse in tests/ui is rejected with a span
//! and a message that says what is allowed. The expected messages depend on the compiler, which
//! rust-toolchain.toml pins.

#[test]
fn misuse_is_a_compile_error_with_a_helpful_message() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
