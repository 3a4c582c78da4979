//! dump_kernels: writes the CUDA C that psg generates for every built-in reduction, one file per
//! kernel (`<kernel name>.cu`: each dtype, and each kernel shape the reduction has: the kernel for
//! any B, the tiled one and its variants for small, middling and large B, the column-mode one,
//! the spill one),
//! into a directory. For reading what the code generator emits, and for timing hand-edited
//! variants beside the generated kernels (`bench/kernel_ab/`).
//!
//!     cargo run --example dump_kernels -- DIR

use std::path::PathBuf;

use psg::runtime::jit::KernelSource;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Some(dir) = std::env::args_os().nth(1).map(PathBuf::from) else {
        return Err("usage: cargo run --example dump_kernels -- DIR".into());
    };
    std::fs::create_dir_all(&dir)?;
    let mut written = 0;
    for def in psg::ops::builtin_reductions() {
        let mut kernels: Vec<&KernelSource> = def.cuda.iter().collect();
        if let Some(t) = &def.tiled {
            kernels.extend(&t.cuda);
            for shape in [&t.small, &t.mid, &t.large, &t.column, &t.spill]
                .into_iter()
                .flatten()
            {
                kernels.extend(shape);
            }
        }
        for k in kernels {
            std::fs::write(dir.join(format!("{}.cu", k.name)), k.source.as_bytes())?;
            written += 1;
        }
    }
    println!("{written} kernel sources written to {}", dir.display());
    Ok(())
}
