//! Snapshots of the generated CUDA C of every built-in (f32), of one built-in in every dtype, and
//! of one CPU implementation: a change to the code generator shows up here as a reviewed diff.

use psg_runtime::DType;

#[test]
fn generated_cuda_of_every_builtin() {
    for def in psg_ops::builtin_reductions() {
        let k = &def.cuda[DType::F32.index()];
        insta::assert_snapshot!(format!("{}_f32", def.name), k.source.as_ref());
    }
}

#[test]
fn generated_tiled_cuda_of_every_builtin() {
    for def in psg_ops::builtin_reductions() {
        let tiled = def
            .tiled
            .as_ref()
            .expect("every built-in has a tiled kernel");
        let k = &tiled.cuda[DType::F32.index()];
        insta::assert_snapshot!(format!("{}_f32_tile", def.name), k.source.as_ref());
    }
}

/// bf16 tiles keep the 16-bit elements (copied as they are, widened where a pass reads them);
/// a transformed tile (the clipped median's products) stays f32.
#[test]
fn generated_tiled_cuda_of_bf16() {
    for name in ["var_corrected", "scaled_median"] {
        let def = psg_ops::builtin_reductions()
            .into_iter()
            .find(|d| d.name == name)
            .expect("a built-in");
        let tiled = def.tiled.as_ref().expect("a tiled kernel");
        insta::assert_snapshot!(
            format!("{name}_bf16_tile"),
            tiled.cuda[DType::BF16.index()].source.as_ref()
        );
    }
}

/// The column-mode kernels (small B: whole columns a thread) of the built-ins that have one, in
/// bf16, and the list of those that have one.
#[test]
fn generated_column_mode_cuda() {
    let mut with = Vec::new();
    for def in psg_ops::builtin_reductions() {
        if let Some(column) = def.tiled.as_ref().and_then(|t| t.column.as_ref()) {
            with.push(def.name);
            if matches!(def.name, "var_corrected" | "zscore_mean") {
                insta::assert_snapshot!(
                    format!("{}_bf16_cols", def.name),
                    column[DType::BF16.index()].source.as_ref()
                );
            }
        }
    }
    insta::assert_snapshot!("column_mode_reductions", with.join("\n"));
}

/// The runtime launches the column-mode kernels with the tile width the generator built them for.
#[test]
fn column_mode_tile_is_the_same_in_codegen_and_runtime() {
    assert_eq!(
        psg_codegen::cuda_tile::COLUMN_TILE_LOG2,
        psg_runtime::COLUMN_TILE_LOG2
    );
}

#[test]
fn generated_cuda_of_median_in_every_dtype() {
    let def = psg_ops::builtin_reductions()
        .into_iter()
        .find(|d| d.name == "median")
        .expect("median is a built-in");
    for d in [DType::F64, DType::F16, DType::BF16] {
        insta::assert_snapshot!(
            format!("median_{}", d.name()),
            def.cuda[d.index()].source.as_ref()
        );
    }
}

#[test]
fn kernel_names_are_op_and_dtype() {
    for def in psg_ops::builtin_reductions() {
        for d in DType::ALL {
            assert_eq!(
                def.cuda[d.index()].name,
                format!("{}_{}", def.name, d.name())
            );
        }
    }
}
