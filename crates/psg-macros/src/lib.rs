//! # psg-macros
//!
//! `#[batch_reduce]` turns a Rust function of one column into a batch reduction that runs on the
//! GPU (CUDA C generated at compile time, JIT-compiled by NVRTC at run time) and on the CPU (Rust
//! generated from the same schedule). Use it through the `psg` facade; see its documentation for
//! the DSL.

#![deny(missing_docs)]

mod lower;
mod signature;

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::quote;
use syn::ext::IdentExt;
use syn::{parse_macro_input, Error, ItemFn, LitStr, Path};

use signature::{ParamKind, Returns};

/// Defines a batch reduction: a function of one column (the B values of one coordinate across
/// the batch) written in a small Rust-syntax DSL.
///
/// The function is replaced by one with the same name that takes `&Tensor` for `Batch` and
/// `PerSample` parameters and the scalar parameters by value, and returns
/// `Result<Tensor, Error>` (a tuple of tensors for a tuple output). A module of the same name holds
/// the generated definition (`name::DEF`) with its CUDA sources and CPU functions.
///
/// `#[batch_reduce(crate = "path")]` names the runtime crate when the default `::psg::runtime`
/// is not how the calling crate reaches it.
#[proc_macro_attribute]
pub fn batch_reduce(attr: TokenStream, item: TokenStream) -> TokenStream {
    let mut runtime: Path = syn::parse_quote!(::psg::runtime);
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("crate") {
            let value = meta.value()?;
            runtime = if value.peek(LitStr) {
                value.parse::<LitStr>()?.parse()?
            } else {
                value.parse()?
            };
            Ok(())
        } else {
            Err(meta
                .error("unsupported attribute: the only option is `crate = \"path::to::runtime\"`"))
        }
    });
    parse_macro_input!(attr with parser);
    let f = parse_macro_input!(item as ItemFn);
    expand(&f, &runtime)
        .unwrap_or_else(|e| e.to_compile_error())
        .into()
}

fn expand(f: &ItemFn, rt: &Path) -> Result<TokenStream2, Error> {
    let sig = signature::parse(f)?;
    let (lets, output) = lower::lower(&sig, &f.block)?;
    let name = &f.sig.ident;
    let per_sample: Vec<String> = sig
        .params
        .iter()
        .filter(|p| matches!(p.kind, ParamKind::PerSample(_)))
        .map(|p| p.name.unraw().to_string())
        .collect();
    let scalars: Vec<String> = sig
        .params
        .iter()
        .filter(|p| matches!(p.kind, ParamKind::Scalar(..)))
        .map(|p| p.name.unraw().to_string())
        .collect();
    // `fn r#mean`: the reduction (its kernels and messages) is `mean`.
    let reduction = psg_codegen::ir::Reduction {
        name: name.unraw().to_string(),
        per_sample: per_sample.clone(),
        scalars: scalars.clone(),
        lets,
        output,
    };
    let rt_text = quote!(#rt).to_string().replace(' ', "");
    let generated = psg_codegen::generate_with_runtime(&reduction, &rt_text)
        .map_err(|e| Error::new(name.span(), e.to_string()))?;
    let cpu_code: TokenStream2 = generated.rust.parse().map_err(|e| {
        Error::new(
            Span::call_site(),
            format!("psg internal error: generated CPU code does not parse: {e}"),
        )
    })?;

    let name_str = name.unraw().to_string();
    let kernel_names = &generated.kernel_names;
    let sources = &generated.cuda;
    let tile_names = &generated.tile_kernel_names;
    let tile_sources = &generated.cuda_tile;
    let tile_per = &generated.tile_bytes_per_element;
    let tile_fixed = &generated.tile_fixed_bytes;
    let tile_fixed_large = &generated.tile_fixed_bytes_large;
    let tile_min = &generated.tile_min_log2;
    // An optional set of kernels, one a dtype.
    let kernels = |sources: &Option<[String; 4]>, names: &[String; 4]| match sources {
        Some(sources) => {
            quote!(::core::option::Option::Some([#(#rt::KernelSource::new_static(#names, #sources)),*]))
        }
        None => quote!(::core::option::Option::None),
    };
    let column = kernels(&generated.cuda_column, &generated.column_kernel_names);
    let large = kernels(
        &generated.cuda_tile_large,
        &generated.tile_large_kernel_names,
    );
    let mid = kernels(&generated.cuda_tile_mid, &generated.tile_mid_kernel_names);
    let small = kernels(
        &generated.cuda_tile_small,
        &generated.tile_small_kernel_names,
    );
    let spill = kernels(&generated.cuda_spill, &generated.spill_kernel_names);
    let spill_fixed = &generated.spill_fixed_bytes;
    let spill_passes = generated.spill_passes;
    let n_ps = per_sample.len();
    let n_scalars = scalars.len();
    let outputs = match sig.returns {
        Returns::Scalars(n) => quote!(#rt::OutputKind::Scalars(#n)),
        Returns::Batch => quote!(#rt::OutputKind::Batch),
    };
    let passes = generated.plan.passes();

    let vis = &f.vis;
    let attrs = &f.attrs;
    let mut args = Vec::new();
    let mut g_arg = None;
    let mut ps_args = Vec::new();
    let mut scalar_args = Vec::new();
    for p in &sig.params {
        let n = &p.name;
        match p.kind {
            ParamKind::Batch => {
                args.push(quote!(#n: &#rt::Tensor));
                g_arg = Some(n.clone());
            }
            ParamKind::PerSample(_) => {
                args.push(quote!(#n: &#rt::Tensor));
                ps_args.push(n.clone());
            }
            ParamKind::Scalar(_, is_f64) => {
                let ty = if is_f64 { quote!(f64) } else { quote!(f32) };
                args.push(quote!(#n: #ty));
                scalar_args.push(quote!(f64::from(#n)));
            }
        }
    }
    let g_arg = g_arg.ok_or_else(|| Error::new(name.span(), "missing the `Batch` input"))?;
    let (ret_ty, ret_value) = match sig.returns {
        Returns::Scalars(1) | Returns::Batch => (quote!(#rt::Tensor), quote!(next())),
        Returns::Scalars(n) => {
            let tys = (0..n).map(|_| quote!(#rt::Tensor));
            let vals = (0..n).map(|_| quote!(next()?));
            (
                quote!((#(#tys),*)),
                quote!(::core::result::Result::Ok((#(#vals),*))),
            )
        }
    };
    let module_doc = format!("The generated definition of the batch reduction `{name_str}`.");
    let def_doc = format!(
        "The batch reduction `{name_str}`: CUDA sources for each dtype and CPU functions (a thread-per-column kernel makes {passes} pass(es) over the column)."
    );
    let generated_note = format!(
        "\n\nA batch reduction generated by `#[batch_reduce]`: it runs on the device that holds `{g_arg}`; \
         `Batch` and `PerSample` arguments are tensors (`PerSample` ones of shape `[B]` in the accumulator dtype), \
         and errors are returned, never panics."
    );
    let missing = format!("psg internal error: `{name_str}` returned fewer outputs than declared");

    Ok(quote! {
        #(#attrs)*
        #[doc = #generated_note]
        #vis fn #name(#(#args),*) -> ::core::result::Result<#ret_ty, #rt::Error> {
            let outputs = #rt::run_reduction(&#name::DEF, #g_arg, &[#(#ps_args),*], &[#(#scalar_args),*])?;
            let mut outputs = outputs.into_iter();
            let mut next = || outputs.next().ok_or_else(|| #rt::Error::Shape(#missing.to_string()));
            #ret_value
        }

        #[doc = #module_doc]
        #[allow(clippy::all, clippy::pedantic, unused)]
        #vis mod #name {
            #cpu_code

            #[doc = #def_doc]
            pub static DEF: #rt::ReductionDef = #rt::ReductionDef {
                name: #name_str,
                n_per_sample: #n_ps,
                n_scalars: #n_scalars,
                scalar_names: &[#(#scalars),*],
                per_sample_names: &[#(#per_sample),*],
                outputs: #outputs,
                launch: #rt::LaunchShape::ThreadPerColumn { block: 256 },
                cuda: [#(#rt::KernelSource::new_static(#kernel_names, #sources)),*],
                tiled: ::core::option::Option::Some(#rt::TiledKernels {
                    cuda: [#(#rt::KernelSource::new_static(#tile_names, #tile_sources)),*],
                    bytes_per_element: [#(#tile_per),*],
                    fixed_bytes: [#(#tile_fixed),*],
                    fixed_bytes_large: [#(#tile_fixed_large),*],
                    min_tile_log2: [#(#tile_min),*],
                    column: #column,
                    large: #large,
                    mid: #mid,
                    small: #small,
                    spill: #spill,
                    spill_fixed_bytes: [#(#spill_fixed),*],
                    spill_passes: #spill_passes,
                }),
                cpu: #rt::CpuKernels {
                    f32: acc32::column::<f32>,
                    f64: acc64::column::<f64>,
                    f16: acc32::column::<#rt::half::f16>,
                    bf16: acc32::column::<#rt::half::bf16>,
                },
            };
        }
    })
}
