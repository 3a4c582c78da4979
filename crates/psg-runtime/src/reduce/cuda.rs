//! The CUDA path: allocate the outputs, pass the arguments in the documented order, launch.

use super::gather::{build_for, RowLoads};
use super::validate::Plan;
use super::{LaunchShape, OutputKind, ReductionDef};
use crate::cuda::{CudaDevice, KernelArg, LaunchConfig};
use crate::device::Device;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

fn as_i64(what: &str, v: usize) -> Result<i64> {
    i64::try_from(v).map_err(|_| Error::Shape(format!("{what} = {v} does not fit in 64 bits")))
}

pub(super) fn run(
    def: &ReductionDef,
    device: &CudaDevice,
    g: &Tensor,
    per_sample: &[&Tensor],
    scalars: &[f64],
    plan: &Plan,
) -> Result<Vec<Tensor>> {
    let on_device = Device::Cuda(device.clone());
    let outputs: Vec<Tensor> = plan
        .output_shapes
        .iter()
        .map(|shape| Tensor::uninit(g.dtype(), shape, &on_device))
        .collect::<Result<_>>()?;
    // Nothing to compute: no column, or a Batch output of an empty batch (empty itself).
    if plan.width == 0 || (def.outputs == OutputKind::Batch && plan.batch == 0) {
        return Ok(outputs);
    }
    // A per-sample tensor of another handle of this device (another stream) must be complete
    // before this stream reads it, and not freed before the launch has read it.
    let _order = device.order_with_others(per_sample)?;
    let mut args = Vec::with_capacity(3 + per_sample.len() + outputs.len() + scalars.len());
    args.push(KernelArg::Ptr(g.cuda_ptr()?));
    for t in per_sample {
        args.push(KernelArg::Ptr(t.cuda_ptr()?));
    }
    for o in &outputs {
        args.push(KernelArg::Ptr(o.cuda_ptr()?));
    }
    args.push(KernelArg::I64(as_i64("B", plan.batch)?));
    args.push(KernelArg::I64(as_i64("P", plan.width)?));
    let f32_scalars = g.dtype().accumulator() == DType::F32;
    args.extend(scalars.iter().map(|&s| {
        if f32_scalars {
            KernelArg::F32(s as f32)
        } else {
            KernelArg::F64(s)
        }
    }));
    let dtype = g.dtype();
    if let Some(tiled) = &def.tiled {
        let limit = device.max_shared_per_block();
        // Small batches: whole columns a thread, where the reduction has such a kernel.
        let column = tiled
            .column
            .as_ref()
            .zip(tiled.column_fits(dtype, plan.batch, limit))
            .map(|(kernels, bytes)| (&kernels[dtype.index()], super::COLUMN_TILE_LOG2, bytes));
        let tile = column.or_else(|| {
            tiled
                .choose(dtype, plan.batch, limit)
                .map(|(log2, bytes)| (tiled.kernel_for(dtype, plan.batch), log2, bytes))
        });
        if let Some((kernel, log2, bytes)) = tile {
            let tile = 1usize << log2;
            args.push(KernelArg::I32(log2 as i32));
            // Rows are read as 16-byte vectors; where they do not start 16-byte aligned, by the
            // kernel's build that gathers its vectors (see `gather`), where it has one.
            let (kernel, vec) = build_for(kernel, RowLoads::of(dtype, plan.width, g.cuda_ptr()?));
            args.push(KernelArg::I32(i32::from(vec)));
            // A persistent grid: one wave of resident blocks, each walking tiles
            // blockIdx.x, blockIdx.x + gridDim.x, ... (the tiled kernel prefetching the next while
            // it works).
            let resident = device.resident_blocks(kernel, 256, bytes)? as usize;
            let tiles = plan.width.div_ceil(tile);
            let blocks = u32::try_from(tiles.min(resident)).map_err(|_| {
                Error::Shape(format!(
                    "reduction `{}`: P = {} needs too many blocks",
                    def.name, plan.width
                ))
            })?;
            // A map (the streaming kernel's per-sample output: no shared memory, no reduction)
            // with fewer tiles of columns than multiprocessors shares its groups of 32 rows among
            // `gridDim.y` blocks a tile (see psg-codegen's `emit_map`). bf16 `sign`, H200, same
            // run: g[2048, 16K] (64 tiles of 256 columns) 0.084 -> 0.044 ms, g[256, 16K]
            // 0.015 -> 0.011; but g[1024, 64K] (256 tiles, 4 blocks a tile) 0.076 -> 0.084,
            // hence not where the tiles alone reach every multiprocessor.
            let map =
                def.outputs == OutputKind::Batch && tiled.bytes_per_element[dtype.index()] == 0;
            let row_blocks = if map && tiles < device.multiprocessor_count() as usize {
                (resident / tiles.max(1)).clamp(1, plan.batch.div_ceil(32).min(65_535)) as u32
            } else {
                1
            };
            let cfg = LaunchConfig {
                grid: (blocks, row_blocks, 1),
                block: (32, 8, 1),
                shared_bytes: bytes,
            };
            device.launch(kernel, cfg, &args)?;
            return Ok(outputs);
        }
        // A tile of 32 columns does not fit: plans of streaming passes keep what rows fit and
        // read the others from g in each pass (see `TiledKernels::spill`) where P is narrow, or
        // where they keep enough rows (`TiledKernels::spill_runs`); else thread per column.
        let sms = device.multiprocessor_count();
        if let Some((kernels, (rows, bytes))) = tiled
            .spill
            .as_ref()
            .zip(tiled.spill_rows(dtype, plan.batch, limit))
            .filter(|(_, (rows, _))| tiled.spill_runs(*rows, plan.batch, plan.width, sms))
        {
            // Its kept rows are copied as 16-byte vectors where rows start 16-byte aligned; the
            // build with `PSG_GATHER` defined loads an element at a time.
            let (kernel, vec) = build_for(
                &kernels[dtype.index()],
                RowLoads::of(dtype, plan.width, g.cuda_ptr()?),
            );
            args.push(KernelArg::I32(rows as i32));
            args.push(KernelArg::I32(i32::from(vec)));
            let resident = device.resident_blocks(kernel, 256, bytes)? as usize;
            let blocks = u32::try_from(plan.width.div_ceil(32).min(resident)).map_err(|_| {
                Error::Shape(format!(
                    "reduction `{}`: P = {} needs too many blocks",
                    def.name, plan.width
                ))
            })?;
            let cfg = LaunchConfig {
                grid: (blocks, 1, 1),
                block: (32, 8, 1),
                shared_bytes: bytes,
            };
            device.launch(kernel, cfg, &args)?;
            return Ok(outputs);
        }
    }
    let cfg = match def.launch {
        LaunchShape::ThreadPerColumn { block } => {
            if !(1..=1024).contains(&block) {
                return Err(Error::InvalidParameter(format!(
                    "reduction `{}`: ThreadPerColumn block size {block} is outside 1..=1024",
                    def.name
                )));
            }
            LaunchConfig::for_items(plan.width, block)?
        }
    };
    device.launch(&def.cuda[dtype.index()], cfg, &args)?;
    Ok(outputs)
}
