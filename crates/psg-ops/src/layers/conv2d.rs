//! Conv2d (NCHW): from the captured input `x` `[B, C_in, H, W]` and output gradient `gy`
//! `[B, C_out, H_out, W_out]`, one launch gives the per-sample weight gradients
//! `[B, C_out, C_in / groups, KH, KW]` and their batch sum, and the same for the bias (`[B, C_out]`).
//! Stride, padding, dilation and groups follow `torch.nn.Conv2d`. The GPU kernel unfolds the input
//! on the fly (implicit im2col, `conv2d.cu`); the CPU loops per sample with rayon.

use psg_runtime::cpu_pool;
use psg_runtime::{
    CudaDevice, DType, Device, Error, KernelArg, KernelSource, LaunchConfig, Result, Tensor,
};
use rayon::prelude::*;

use super::grads::{LayerGrads, ParamGrad, Sink};
use super::inputs::{check_f32, cpu_f32, grid_blocks, int_arg, long_arg, ptr_arg, same_device};
use super::linear::batch_sum;

const OP: &str = "conv2d";
const TILE: usize = 64;

static KERNEL: KernelSource = KernelSource::new_static("psg_conv2d_f32", include_str!("conv2d.cu"));

/// The CUDA source of the Conv2d kernel, for the NVRTC check.
pub(crate) fn kernel_sources() -> Vec<&'static KernelSource> {
    vec![&KERNEL]
}

/// A Conv2d layer's hyper-parameters (as `torch.nn.Conv2d`; pairs are (height, width)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Conv2dSpec {
    /// Kernel size (KH, KW), each at least 1.
    pub kernel: (usize, usize),
    /// Stride, each at least 1.
    pub stride: (usize, usize),
    /// Zero padding on each side.
    pub padding: (usize, usize),
    /// Dilation, each at least 1.
    pub dilation: (usize, usize),
    /// Groups: C_in and C_out must be multiples of it.
    pub groups: usize,
    /// Whether the layer has a bias.
    pub bias: bool,
}

impl Conv2dSpec {
    /// A `kh x kw` convolution with stride 1, no padding, dilation 1, one group and a bias.
    pub fn new(kh: usize, kw: usize) -> Self {
        Conv2dSpec {
            kernel: (kh, kw),
            stride: (1, 1),
            padding: (0, 0),
            dilation: (1, 1),
            groups: 1,
            bias: true,
        }
    }

    /// The output's (H_out, W_out) for an input of (h, w), or an error when the kernel does not fit
    /// or a parameter is out of range.
    pub fn output_size(&self, h: usize, w: usize) -> Result<(usize, usize)> {
        let bad = |what: &str, v: (usize, usize)| {
            Err(Error::InvalidParameter(format!(
                "{OP}: {what} must be at least 1 in each dimension, got {v:?}"
            )))
        };
        if self.kernel.0 == 0 || self.kernel.1 == 0 {
            return bad("the kernel size", self.kernel);
        }
        if self.stride.0 == 0 || self.stride.1 == 0 {
            return bad("the stride", self.stride);
        }
        if self.dilation.0 == 0 || self.dilation.1 == 0 {
            return bad("the dilation", self.dilation);
        }
        let one = |size: usize, k: usize, s: usize, p: usize, d: usize| -> Result<usize> {
            let span = d.checked_mul(k - 1).and_then(|v| v.checked_add(1));
            let padded = p.checked_mul(2).and_then(|v| v.checked_add(size));
            match (span, padded) {
                (Some(span), Some(padded)) if padded >= span => Ok((padded - span) / s + 1),
                (None, _) | (_, None) => Err(Error::InvalidParameter(format!(
                    "{OP}: the kernel's span (dilation {d} x (kernel {k} - 1) + 1) or the padded \
                     input ({size} + 2 x padding {p}) does not fit in usize; these sizes cannot \
                     describe a tensor, so one of them is wrong"
                ))),
                _ => Err(Error::Shape(format!(
                    "{OP}: a kernel of {k} with dilation {d} does not fit an input of {size} padded by {p} \
                     on each side"
                ))),
            }
        };
        Ok((
            one(
                h,
                self.kernel.0,
                self.stride.0,
                self.padding.0,
                self.dilation.0,
            )?,
            one(
                w,
                self.kernel.1,
                self.stride.1,
                self.padding.1,
                self.dilation.1,
            )?,
        ))
    }
}

/// Geometry of one call.
struct Geometry {
    b: usize,
    c_in: usize,
    h: usize,
    w: usize,
    c_out: usize,
    ho: usize,
    wo: usize,
    spec: Conv2dSpec,
}

impl Geometry {
    fn of(x: &Tensor, gy: &Tensor, spec: &Conv2dSpec) -> Result<Geometry> {
        check_f32(OP, "the input x", x)?;
        check_f32(OP, "the output gradient gy", gy)?;
        let (sx, sg) = (x.shape(), gy.shape());
        if sx.len() != 4 || sg.len() != 4 || sx[0] != sg[0] {
            return Err(Error::Shape(format!(
                "{OP}: the input x {sx:?} and output gradient gy {sg:?} must be [B, C_in, H, W] and \
                 [B, C_out, H_out, W_out] with the same B"
            )));
        }
        let groups = spec.groups;
        if groups == 0 || !sx[1].is_multiple_of(groups) || !sg[1].is_multiple_of(groups) {
            return Err(Error::InvalidParameter(format!(
                "{OP}: groups = {groups} must be at least 1 and divide C_in = {} and C_out = {}",
                sx[1], sg[1]
            )));
        }
        let (kh, kw) = spec.kernel;
        let weight = [sg[1], sx[1] / groups, kh, kw];
        // The weight's columns (C_in / groups x KH x KW) and its size must fit a usize, as
        // every per-sample buffer's size is a multiple of them.
        let fits = |dims: &[usize]| dims.iter().try_fold(1usize, |a, &x| a.checked_mul(x));
        if fits(&weight[1..]).is_none() || fits(&weight).is_none() {
            return Err(Error::Shape(format!(
                "{OP}: a weight of {weight:?} has more elements than fit in memory"
            )));
        }
        let (ho, wo) = spec.output_size(sx[2], sx[3])?;
        if (sg[2], sg[3]) != (ho, wo) {
            return Err(Error::Shape(format!(
                "{OP}: for an input of {}x{} and {spec:?}, the output is {ho}x{wo}, but gy is {}x{}",
                sx[2], sx[3], sg[2], sg[3]
            )));
        }
        Ok(Geometry {
            b: sx[0],
            c_in: sx[1],
            h: sx[2],
            w: sx[3],
            c_out: sg[1],
            ho,
            wo,
            spec: *spec,
        })
    }

    /// Input channels per group times kernel positions: the columns of one weight row.
    fn r(&self) -> usize {
        self.c_in / self.spec.groups * self.spec.kernel.0 * self.spec.kernel.1
    }

    fn weight_shape(&self) -> [usize; 4] {
        [
            self.c_out,
            self.c_in / self.spec.groups,
            self.spec.kernel.0,
            self.spec.kernel.1,
        ]
    }
}

/// Per-sample and batch gradients of a Conv2d layer's weight `[C_out, C_in / groups, KH, KW]` (and
/// bias `[C_out]` when `spec.bias`) from its captured input `x` `[B, C_in, H, W]` and output
/// gradient `gy` `[B, C_out, H_out, W_out]`, both f32 on one device.
pub fn conv2d(x: &Tensor, gy: &Tensor, spec: &Conv2dSpec, sink: Sink<'_>) -> Result<LayerGrads> {
    let geo = Geometry::of(x, gy, spec)?;
    let device = same_device(OP, ("the input x", x), ("the output gradient gy", gy))?;
    let (weight, bias) = match &device {
        Device::Cpu => cpu(x, gy, &geo)?,
        Device::Cuda(dev) => {
            let _order = dev.order_with_others(&[x, gy])?;
            cuda(dev, x, gy, &geo)?
        }
    };
    let mut params = vec![ParamGrad {
        name: "weight",
        per_sample: sink.finish_dense(weight.0)?,
        batch: weight.1,
    }];
    if let Some((per_sample, batch)) = bias {
        params.push(ParamGrad {
            name: "bias",
            per_sample: sink.finish_dense(per_sample)?,
            batch,
        });
    }
    Ok(LayerGrads { params })
}

type Pair = (Tensor, Tensor);

fn shapes(geo: &Geometry) -> (Vec<usize>, Vec<usize>) {
    let w = geo.weight_shape();
    let mut ps = vec![geo.b];
    ps.extend(w);
    (ps, w.to_vec())
}

fn cpu(x: &Tensor, gy: &Tensor, geo: &Geometry) -> Result<(Pair, Option<Pair>)> {
    let (xv, gv) = (cpu_f32(x)?, cpu_f32(gy)?);
    let (c_in, h, w, c_out) = (geo.c_in, geo.h, geo.w, geo.c_out);
    let (kh, kw) = geo.spec.kernel;
    let (sh, sw) = geo.spec.stride;
    let (ph, pw) = geo.spec.padding;
    let (dh, dw) = geo.spec.dilation;
    let groups = geo.spec.groups;
    let (cg, cog, n_r, n_l) = (c_in / groups, c_out / groups, geo.r(), geo.ho * geo.wo);
    let per = c_out * n_r;
    let mut ps = psg_runtime::host_zeros::<f32>(&[geo.b, per])?;
    if per > 0 {
        cpu_pool::install(|| {
            ps.par_chunks_mut(per).enumerate().for_each(|(b, out)| {
                for co in 0..c_out {
                    let gr = co / cog;
                    let grow = &gv[(b * c_out + co) * n_l..(b * c_out + co + 1) * n_l];
                    for r in 0..n_r {
                        let (ci, ky, kx) = (r / (kh * kw), r % (kh * kw) / kw, r % kw);
                        let plane = &xv[(b * c_in + gr * cg + ci) * h * w..][..h * w];
                        let mut acc = 0.0f32;
                        for oh in 0..geo.ho {
                            let ih = (oh * sh + ky * dh) as isize - ph as isize;
                            if ih < 0 || ih >= h as isize {
                                continue;
                            }
                            for ow in 0..geo.wo {
                                let iw = (ow * sw + kx * dw) as isize - pw as isize;
                                if iw >= 0 && iw < w as isize {
                                    acc += grow[oh * geo.wo + ow]
                                        * plane[ih as usize * w + iw as usize];
                                }
                            }
                        }
                        out[co * n_r + r] = acc;
                    }
                }
            })
        })?;
    }
    let batch = batch_sum(&ps, geo.b, per)?;
    let (ps_shape, w_shape) = shapes(geo);
    let cpu = Device::Cpu;
    let weight = (
        Tensor::from_vec(ps, &ps_shape, &cpu)?,
        Tensor::from_vec(batch, &w_shape, &cpu)?,
    );
    if !geo.spec.bias {
        return Ok((weight, None));
    }
    let mut bps = psg_runtime::host_zeros::<f32>(&[geo.b, c_out])?;
    if c_out > 0 {
        cpu_pool::install(|| {
            bps.par_chunks_mut(c_out).enumerate().for_each(|(b, out)| {
                for (co, x) in out.iter_mut().enumerate() {
                    *x = gv[(b * c_out + co) * n_l..(b * c_out + co + 1) * n_l]
                        .iter()
                        .sum();
                }
            })
        })?;
    }
    let bbatch = batch_sum(&bps, geo.b, c_out)?;
    let bias = (
        Tensor::from_vec(bps, &[geo.b, c_out], &cpu)?,
        Tensor::from_vec(bbatch, &[c_out], &cpu)?,
    );
    Ok((weight, Some(bias)))
}

fn cuda(dev: &CudaDevice, x: &Tensor, gy: &Tensor, geo: &Geometry) -> Result<(Pair, Option<Pair>)> {
    let device = Device::Cuda(dev.clone());
    let (ps_shape, w_shape) = shapes(geo);
    let groups = geo.spec.groups;
    let n_l = geo.ho * geo.wo;
    let gemm = geo.b > 0 && n_l > 0 && geo.c_out > 0 && geo.r() > 0;
    let bias_work = geo.spec.bias && geo.b > 0 && n_l > 0 && geo.c_out > 0;
    let make = |shape: &[usize], written: bool| {
        if written {
            Tensor::uninit(DType::F32, shape, &device)
        } else {
            Tensor::zeros(DType::F32, shape, &device)
        }
    };
    let weight = (make(&ps_shape, gemm)?, make(&w_shape, gemm)?);
    let bias = if geo.spec.bias {
        Some((
            make(&[geo.b, geo.c_out], bias_work)?,
            make(&[geo.c_out], bias_work)?,
        ))
    } else {
        None
    };
    let gemm_blocks = if gemm {
        groups * (geo.c_out / groups).div_ceil(TILE) * geo.r().div_ceil(TILE)
    } else {
        0
    };
    let bias_blocks = if bias_work { geo.c_out.div_ceil(8) } else { 0 };
    if gemm_blocks + bias_blocks == 0 {
        return Ok((weight, bias));
    }
    let null = KernelArg::Ptr(0);
    let (bias_ps, bias_batch) = match (&bias, bias_work) {
        (Some((p, s)), true) => (ptr_arg(p)?, ptr_arg(s)?),
        _ => (null, null),
    };
    let i = |what: &str, v: usize| int_arg(OP, what, v);
    let spec = &geo.spec;
    let args = [
        ptr_arg(x)?,
        ptr_arg(gy)?,
        if gemm { ptr_arg(&weight.0)? } else { null },
        if gemm { ptr_arg(&weight.1)? } else { null },
        bias_ps,
        bias_batch,
        long_arg(OP, "B", geo.b)?,
        i("C_in", geo.c_in)?,
        i("H", geo.h)?,
        i("W", geo.w)?,
        i("C_out", geo.c_out)?,
        i("H_out", geo.ho)?,
        i("W_out", geo.wo)?,
        i("KH", spec.kernel.0)?,
        i("KW", spec.kernel.1)?,
        i("stride", spec.stride.0)?,
        i("stride", spec.stride.1)?,
        i("padding", spec.padding.0)?,
        i("padding", spec.padding.1)?,
        i("dilation", spec.dilation.0)?,
        i("dilation", spec.dilation.1)?,
        i("groups", groups)?,
        i("blocks", gemm_blocks)?,
    ];
    // The kernel's index arithmetic is 32-bit within one image and one weight row.
    i("H_out * W_out", n_l)?;
    i("the weight's size", geo.c_out * geo.r())?;
    let cfg = LaunchConfig {
        grid: (grid_blocks(OP, gemm_blocks + bias_blocks)?, 1, 1),
        block: (256, 1, 1),
        shared_bytes: 0,
    };
    dev.launch(&KERNEL, cfg, &args)?;
    Ok((weight, bias))
}
