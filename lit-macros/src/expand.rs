//! Code generation, and the entry points' plumbing (parse → check → expand, errors reported
//! once next to the user's item and stub impls that keep follow-on errors quiet).

use proc_macro2::{Group, Span, TokenStream, TokenTree};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Ident, Item, Type};

use crate::ast::{HookFn, Input, ModuleImpl, ModuleStruct, Role, take_attr};
use crate::attr::{FieldOptions, HparamsOptions, ModuleOptions};
use crate::check;
use crate::errors::Errors;
use crate::hooks::{self, Ret, Stage, Ty};

fn debug_print(name: &str, tokens: &TokenStream) {
    if std::env::var_os("LIT_MACROS_DEBUG").is_some_and(|v| v != "0") {
        eprintln!("// #[{name}] expansion:\n{tokens}\n");
    }
}

pub(crate) fn lightning_module(args: TokenStream, input: TokenStream) -> TokenStream {
    let out = match syn::parse2::<Item>(input.clone()) {
        Ok(Item::Struct(item)) => module_struct(args, item),
        Ok(Item::Impl(item)) => module_impl(args, item),
        Ok(Item::Enum(item)) => {
            let e = syn::Error::new_spanned(
                item.enum_token,
                "`#[lightning_module]` goes on a struct and on its impl block, not on an enum",
            );
            let e = e.to_compile_error();
            quote!(#item #e)
        }
        Ok(other) => {
            let e = syn::Error::new(other.span(), "`#[lightning_module]` goes on a struct and on its impl block")
                .to_compile_error();
            quote!(#other #e)
        }
        Err(e) => {
            let e = e.to_compile_error();
            quote!(#input #e)
        }
    };
    debug_print("lightning_module", &out);
    out
}

fn options(args: TokenStream, errors: &mut Errors) -> ModuleOptions {
    ModuleOptions::parse(args).unwrap_or_else(|e| {
        errors.add(e);
        ModuleOptions::default()
    })
}

// ----- the struct -----

fn module_struct(args: TokenStream, item: syn::ItemStruct) -> TokenStream {
    let mut errors = Errors::default();
    let opts = options(args, &mut errors);
    if let Some(steps) = &opts.truncated_bptt_steps {
        errors.push(
            steps,
            "`truncated_bptt_steps` goes on the impl block's `#[lightning_module(...)]`, not the struct's",
        );
    }
    if opts.automatic_optimization.is_some() {
        errors.push_span(
            Span::call_site(),
            "`automatic_optimization` goes on the impl block's `#[lightning_module(...)]`, not the struct's",
        );
    }
    let module = ModuleStruct::from_syn(item, &mut errors);
    let generated = struct_items(&opts.lit(), &module);
    let item = &module.item;
    let errors = errors.into_compile_errors();
    quote!(#item #errors #generated)
}

/// What the struct gets: `ModelParts` (where the variables and hparams are) and the model-side
/// methods. Without a `VarStore` field only a stand-in `ModelParts` is generated, next to the
/// error, so that the impl block reports nothing more.
fn struct_items(lit: &TokenStream, module: &ModuleStruct) -> TokenStream {
    let item = &module.item;
    let ident = &item.ident;
    let (impl_generics, ty_generics, where_clause) = item.generics.split_for_impl();
    let tch = quote!(#lit::__private::tch);
    // Spanned at the field's type: a type without `#[hparams]`, or a private one, is reported
    // there.
    let hparams_ty = match &module.hparams {
        Some((_, ty)) => quote_spanned!(ty.span()=> type Hparams = #ty;),
        None => quote!(
            type Hparams = ();
        ),
    };
    let Some(vs) = &module.var_store else {
        return quote! {
            const _: () = {
                #[automatically_derived]
                impl #impl_generics #lit::__private::ModelParts for #ident #ty_generics #where_clause {
                    #hparams_ty
                    fn var_store(&self) -> &#tch::nn::VarStore {
                        ::core::unreachable!()
                    }
                    fn var_store_mut(&mut self) -> &mut #tch::nn::VarStore {
                        ::core::unreachable!()
                    }
                    fn hparams(&self) -> ::core::option::Option<&Self::Hparams> {
                        ::core::unreachable!()
                    }
                    fn hparams_mut(&mut self) -> ::core::option::Option<&mut Self::Hparams> {
                        ::core::unreachable!()
                    }
                }
            };
        };
    };
    let (hparams_some, hparams_some_mut, hparams_fn) = match &module.hparams {
        Some((field, ty)) => (
            quote!(::core::option::Option::Some(&self.#field)),
            quote!(::core::option::Option::Some(&mut self.#field)),
            // Spanned at the field's type, so that a private config type in a public module is
            // reported at the field, naming the generated `hparams()`.
            quote_spanned! {ty.span()=>
                /// The hyper-parameters (the `#[hparams]` field), as saved in checkpoints.
                pub fn hparams(&self) -> &#ty {
                    &self.#field
                }
            },
        ),
        None => (quote!(::core::option::Option::None), quote!(::core::option::Option::None), quote!()),
    };
    let example = module.example_input.as_ref().map(|field| {
        quote! {
            /// The example input (the `#[example_input]` field), used to trace the model.
            pub fn example_input_array(&self) -> ::core::option::Option<#tch::Tensor> {
                ::core::option::Option::Some(self.#field.shallow_clone())
            }
        }
    });
    let has_example = module.example_input.as_ref().map(|field| {
        quote! {
            #[automatically_derived]
            impl #impl_generics #lit::__private::HasExampleInput for #ident #ty_generics #where_clause {
                fn example_input(&self) -> #tch::Tensor {
                    self.#field.shallow_clone()
                }
            }
        }
    });
    quote! {
        const _: () = {
            #has_example

            #[automatically_derived]
            impl #impl_generics #lit::__private::ModelParts for #ident #ty_generics #where_clause {
                #hparams_ty
                fn var_store(&self) -> &#tch::nn::VarStore {
                    &self.#vs
                }
                fn var_store_mut(&mut self) -> &mut #tch::nn::VarStore {
                    &mut self.#vs
                }
                fn hparams(&self) -> ::core::option::Option<&Self::Hparams> {
                    #hparams_some
                }
                fn hparams_mut(&mut self) -> ::core::option::Option<&mut Self::Hparams> {
                    #hparams_some_mut
                }
            }
        };

        #[automatically_derived]
        impl #impl_generics #ident #ty_generics #where_clause {
            #hparams_fn

            /// The device the module's variables are on.
            pub fn device(&self) -> #tch::Device {
                self.#vs.device()
            }

            /// Makes no parameter require grad (for inference or as a frozen backbone).
            pub fn freeze(&mut self) {
                #lit::__private::freeze(&mut self.#vs)
            }

            /// Makes every parameter require grad again (Lightning's `unfreeze`).
            pub fn unfreeze(&mut self) {
                #lit::__private::unfreeze(&mut self.#vs)
            }

            /// Megabytes of parameters and buffers.
            pub fn model_size(&self) -> f64 {
                #lit::__private::model_size(&self.#vs)
            }

            #example
        }
    }
}

// ----- the impl block -----

fn module_impl(args: TokenStream, item: syn::ItemImpl) -> TokenStream {
    let mut errors = Errors::default();
    let opts = options(args, &mut errors);
    let module = ModuleImpl::from_syn(item, &mut errors);
    let training_step_ok = check::module_impl(&opts, &module, &mut errors);
    // Generated even after errors, from the hooks that broke no rule: their return and
    // parameter types are then checked in the same compile, and code using the module (`fit`)
    // sees the batch types the step hooks declare rather than follow-on errors.
    let generated = expand_impl(&opts, &module, training_step_ok);
    let item = &module.item;
    let errors = errors.into_compile_errors();
    quote!(#item #errors #generated)
}

/// `tokens` with every span set to `span`, so that an error about the expression they form
/// points at the user's code (e.g. a return type) rather than at the attribute.
fn respan(tokens: &TokenStream, span: Span) -> TokenStream {
    tokens
        .clone()
        .into_iter()
        .map(|mut tt| {
            match &mut tt {
                TokenTree::Group(g) => {
                    let mut group = Group::new(g.delimiter(), respan(&g.stream(), span));
                    group.set_span(span);
                    *g = group;
                }
                other => other.set_span(span),
            }
            tt
        })
        .collect()
}

/// The value type inside `Result<T>` (or `T` itself).
fn ok_type(output: &syn::ReturnType) -> TokenStream {
    match output {
        syn::ReturnType::Default => quote!(()),
        syn::ReturnType::Type(_, ty) => {
            if let Type::Path(p) = &**ty
                && let Some(last) = p.path.segments.last()
                && last.ident == "Result"
                && let syn::PathArguments::AngleBracketed(args) = &last.arguments
                && let Some(syn::GenericArgument::Type(inner)) = args.args.first()
            {
                return quote!(#inner);
            }
            quote!(#ty)
        }
    }
}

/// `#[cfg(...)]` attributes for these predicates (none when there are none).
fn cfg_attrs(cfgs: &[TokenStream]) -> TokenStream {
    cfgs.iter().map(|c| quote!(#[cfg(#c)])).collect()
}

/// The cfg under which none of `defs` exists: `None` when one of them always exists,
/// `Some(quote!())` when there are none, `Some(#[cfg(not(any(...)))])` otherwise.
fn absent<'a>(defs: impl IntoIterator<Item = &'a [TokenStream]>) -> Option<TokenStream> {
    let mut all = Vec::new();
    for cfgs in defs {
        if cfgs.is_empty() {
            return None;
        }
        all.push(quote!(all(#(#cfgs),*)));
    }
    Some(if all.is_empty() { quote!() } else { quote!(#[cfg(not(any(#(#all),*)))]) })
}

/// Whether one of `defs` exists in this build, as a `bool` expression.
fn present<'a>(defs: impl IntoIterator<Item = &'a [TokenStream]>) -> TokenStream {
    let mut all = Vec::new();
    for cfgs in defs {
        if cfgs.is_empty() {
            return quote!(true);
        }
        all.push(quote!(all(#(#cfgs),*)));
    }
    if all.is_empty() { quote!(false) } else { quote!(::core::cfg!(any(#(#all),*))) }
}

/// `type #name = …;` once per definition (each under its cfgs), and `()` when none exists.
fn assoc_type(name: &str, defs: &[(&[TokenStream], TokenStream)]) -> TokenStream {
    let name = format_ident!("{name}");
    let variants = defs.iter().map(|(cfgs, ty)| {
        let cfgs = cfg_attrs(cfgs);
        quote!(#cfgs type #name = #ty;)
    });
    let fallback = absent(defs.iter().map(|(cfgs, _)| *cfgs)).map(|cfg| quote!(#cfg type #name = ();));
    quote!(#(#variants)* #fallback)
}

fn expand_impl(opts: &ModuleOptions, module: &ModuleImpl, training_step_ok: bool) -> TokenStream {
    let lit = opts.lit();
    let self_ty = &module.item.self_ty;
    let (impl_generics, _, where_clause) = module.item.generics.split_for_impl();
    let valid: Vec<&HookFn> =
        module.hooks.iter().filter(|h| h.valid && (training_step_ok || h.hook.name != "training_step")).collect();
    let valid_defs = |name: &'static str| valid.iter().filter(move |h| h.hook.name == name).map(|h| &h.cfgs[..]);
    // Batch types come from every definition of a step whose batch parameter was found, valid
    // or not, so that an error in a step hook brings no follow-on error where the module is used.
    let batch_types = Stage::ALL.map(|stage| {
        let defs: Vec<(&[TokenStream], TokenStream)> = module
            .steps(stage)
            .filter_map(|h| h.arg_type("batch").map(|ty| (&h.cfgs[..], ty)))
            .filter(|(_, ty)| !matches!(ty, Type::Reference(_)))
            .map(|(cfgs, ty)| (cfgs, quote_spanned!(ty.span()=> #ty)))
            .collect();
        assoc_type(stage.batch_type(), &defs)
    });
    let predictions: Vec<(&[TokenStream], TokenStream)> =
        module.definitions("predict_step").map(|h| (&h.cfgs[..], ok_type(&h.output))).collect();
    let prediction = assoc_type("Prediction", &predictions);
    let flags = hooks::HOOKS.iter().filter(|h| h.flag).map(|hook| {
        let field = format_ident!("{}", hook.name);
        let value = present(module.definitions(hook.name).map(|h| &h.cfgs[..]));
        quote!(#field: #value)
    });
    let tbptt = match &opts.truncated_bptt_steps {
        Some(n) => quote!(::core::option::Option::Some(#n)),
        None => quote!(::core::option::Option::None),
    };
    let automatic = opts.automatic_optimization.unwrap_or(true);
    let methods = valid.iter().map(|h| hook_method(&lit, self_ty, h));
    let missing_training = absent(valid_defs("training_step")).map(|cfg| {
        let message = format!("`{}` has no `training_step`, so it cannot be trained", quote!(#self_ty));
        quote! {
            #cfg
            fn training_step(
                &mut self, _batch: Self::TrainBatch, _batch_idx: usize, _cx: &mut #lit::Ctx,
            ) -> #lit::Result<::core::option::Option<#lit::StepOutput>> {
                ::core::result::Result::Err(#lit::Error::msg(#message))
            }
        }
    });
    let default_split =
        opts.truncated_bptt_steps.as_ref().and_then(|_| absent(valid_defs("tbptt_split_batch"))).map(|cfg| {
            let span =
                module.hook("training_step").and_then(|h| h.arg_type("batch")).map_or(Span::call_site(), Spanned::span);
            let lit_r = respan(&lit, span);
            let split = quote_spanned!(span=> #lit_r::__private::TbpttSplit::tbptt_split(batch, split_size));
            quote! {
                #cfg
                fn tbptt_split_batch(
                    &mut self, batch: Self::TrainBatch, split_size: usize, _cx: &mut #lit::Ctx,
                ) -> #lit::Result<::std::vec::Vec<Self::TrainBatch>> {
                    #split
                }
            }
        });
    let init = module.init.as_ref().map(|init| {
        let ident = &init.ident;
        let cfgs = cfg_attrs(&init.cfgs);
        let call = if init.takes_hparams { quote!(<#self_ty>::#ident(hparams)) } else { quote!({ let _ = hparams; <#self_ty>::#ident() }) };
        let span = match &init.output {
            syn::ReturnType::Type(_, ty) => ty.span(),
            syn::ReturnType::Default => ident.span(),
        };
        let lit_r = respan(&lit, span);
        let convert = match (&init.unchecked_arg, init.takes_hparams) {
            (Some(arg), true) => quote! {{
                #[allow(unused_imports)]
                use #lit::__private::{ViaHparamsArg as _, ViaOtherArg as _};
                (&&#lit::__private::InitProbe::<Self, #arg>::new()).call(<#self_ty>::#ident, hparams)
            }},
            _ => quote_spanned!(span=> #lit_r::__private::IntoHookResult::<Self>::into_hook_result(#call)),
        };
        quote! {
            #cfgs
            #[automatically_derived]
            impl #impl_generics #lit::__private::Init for #self_ty #where_clause {
                fn init(hparams: <Self as #lit::__private::ModelParts>::Hparams) -> #lit::Result<Self> {
                    #convert
                }
            }

            #cfgs
            #[automatically_derived]
            impl #impl_generics #self_ty #where_clause {
                /// Rebuilds the module from a checkpoint: its saved hyper-parameters go through
                /// the constructor, then the saved weights are loaded (every variable must match).
                pub fn load_from_checkpoint(path: impl ::core::convert::AsRef<::std::path::Path>) -> #lit::Result<Self> {
                    #lit::__private::load_from_checkpoint::<Self>(path.as_ref())
                }
            }
        }
    });
    let example = module.example_input.as_ref().map(|m| {
        quote! {
            #[automatically_derived]
            impl #impl_generics #self_ty #where_clause {
                /// The example input (from the `#[example_input]` method), used to trace the model.
                pub fn example_input_array(&self) -> ::core::option::Option<#lit::__private::tch::Tensor> {
                    ::core::option::Option::Some(self.#m())
                }
            }

            const _: () = {
                #[automatically_derived]
                impl #impl_generics #lit::__private::HasExampleInput for #self_ty #where_clause {
                    fn example_input(&self) -> #lit::__private::tch::Tensor {
                        self.#m()
                    }
                }
            };
        }
    });
    let export = export_methods(&lit, module);
    quote! {
        const _: () = {
            #[automatically_derived]
            impl #impl_generics #lit::LightningModule for #self_ty #where_clause {
                #(#batch_types)*
                #prediction

                const HOOKS: #lit::Hooks = #lit::Hooks { #(#flags),* };
                const TRUNCATED_BPTT_STEPS: ::core::option::Option<usize> = #tbptt;
                const AUTOMATIC_OPTIMIZATION: bool = #automatic;

                fn var_store(&self) -> &#lit::__private::tch::nn::VarStore {
                    #lit::__private::ModelParts::var_store(self)
                }
                fn var_store_mut(&mut self) -> &mut #lit::__private::tch::nn::VarStore {
                    #lit::__private::ModelParts::var_store_mut(self)
                }
                fn hparams_json(&self) -> ::core::option::Option<#lit::__private::serde_json::Value> {
                    #lit::__private::hparams_json(self)
                }
                fn set_hparams_json(&mut self, hparams: #lit::__private::serde_json::Value) -> #lit::Result<()> {
                    #lit::__private::ModelParts::replace_hparams_json(self, hparams)
                }
                fn prediction_tensors(
                    prediction: &Self::Prediction,
                ) -> ::core::option::Option<::std::vec::Vec<(::std::string::String, #lit::__private::tch::Tensor)>> {
                    #[allow(unused_imports)]
                    use #lit::__private::{ViaNoPredictionTensors as _, ViaPredictionTensors as _};
                    (&&#lit::__private::PredictionProbe(prediction)).tensors()
                }

                #missing_training
                #default_split
                #(#methods)*
            }

            #init
        };
        #example
        #export
    }
}

/// `to_torchscript`, `to_onnx` and their `_with` forms, tracing the module's `forward`; where
/// no `forward` can be traced, the same methods exist with a bound that makes calling them a
/// compile error naming the `forward` they need.
fn export_methods(lit: &TokenStream, module: &ModuleImpl) -> TokenStream {
    const NAMES: [&str; 4] = ["to_torchscript", "to_torchscript_with", "to_onnx", "to_onnx_with"];
    if module.methods.iter().any(|m| NAMES.contains(&m.as_str())) {
        return quote!();
    }
    let self_ty = &module.item.self_ty;
    let (impl_generics, _, where_clause) = module.item.generics.split_for_impl();
    let tch = quote!(#lit::__private::tch);
    let traced = module.forward.as_ref().map(|forward| {
        let ident = &forward.ident;
        let cfgs = cfg_attrs(&forward.cfgs);
        let flag = forward.train_flag.then(|| quote!(, false));
        let input = match forward.input {
            Input::Ref => quote!(&__lit_inputs[0]),
            Input::Value => quote!(__lit_inputs[0].shallow_clone()),
        };
        let closure = quote! {
            |__lit_inputs: &[#tch::Tensor]| {
                #lit::__private::IntoTraceOutputs::into_trace_outputs(<#self_ty>::#ident(self, #input #flag))
            }
        };
        quote! {
            #cfgs
            #[automatically_derived]
            impl #impl_generics #self_ty #where_clause {
                /// Traces `forward` on the example input (`#[example_input]`) into TorchScript, as
                /// Lightning's `to_torchscript(method="trace")`. Save it with `.save(path)`; PyTorch
                /// loads it with `torch.jit.load`.
                pub fn to_torchscript(&self) -> #lit::Result<#tch::CModule> {
                    #[allow(unused_imports)]
                    use #lit::__private::{ViaExampleInput as _, ViaNoExampleInput as _};
                    let input = (&&#lit::__private::ExampleProbe(self)).example()?;
                    self.to_torchscript_with(&input)
                }

                /// Traces `forward` on `input` into TorchScript.
                pub fn to_torchscript_with(&self, input: &#tch::Tensor) -> #lit::Result<#tch::CModule> {
                    let vs = #lit::__private::ModelParts::var_store(self);
                    #lit::export::to_torchscript(vs, &[input.to_device(vs.device())], #closure)
                }

                /// Traces `forward` on the example input and writes an ONNX model to `path`, as
                /// Lightning's `to_onnx(file_path)`.
                pub fn to_onnx(&self, path: impl ::core::convert::AsRef<::std::path::Path>) -> #lit::Result<()> {
                    #[allow(unused_imports)]
                    use #lit::__private::{ViaExampleInput as _, ViaNoExampleInput as _};
                    let input = (&&#lit::__private::ExampleProbe(self)).example()?;
                    self.to_onnx_with(path, &input)
                }

                /// Traces `forward` on `input` and writes an ONNX model to `path`.
                pub fn to_onnx_with(
                    &self,
                    path: impl ::core::convert::AsRef<::std::path::Path>,
                    input: &#tch::Tensor,
                ) -> #lit::Result<()> {
                    let vs = #lit::__private::ModelParts::var_store(self);
                    #lit::export::to_onnx(vs, &[input.to_device(vs.device())], #closure, path.as_ref())
                }
            }
        }
    });
    let untraceable_cfg = match &module.forward {
        None => Some(quote!()),
        Some(forward) => absent([&forward.cfgs[..]]),
    };
    let untraceable = untraceable_cfg.map(|cfg| {
        // `for<'a> &'a Self: …` is checked where a method is called, not where it is defined.
        let bound = quote!(where for<'__lit> &'__lit Self: #lit::__private::TraceableForward);
        quote! {
            #cfg
            #[automatically_derived]
            impl #impl_generics #self_ty #where_clause {
                /// Needs `fn forward(&self, x: &Tensor) -> Tensor` (see `TraceableForward`).
                pub fn to_torchscript(&self) -> #lit::Result<#tch::CModule> #bound {
                    ::core::unreachable!()
                }
                /// Needs `fn forward(&self, x: &Tensor) -> Tensor` (see `TraceableForward`).
                pub fn to_torchscript_with(&self, _input: &#tch::Tensor) -> #lit::Result<#tch::CModule> #bound {
                    ::core::unreachable!()
                }
                /// Needs `fn forward(&self, x: &Tensor) -> Tensor` (see `TraceableForward`).
                pub fn to_onnx(&self, _path: impl ::core::convert::AsRef<::std::path::Path>) -> #lit::Result<()> #bound {
                    ::core::unreachable!()
                }
                /// Needs `fn forward(&self, x: &Tensor) -> Tensor` (see `TraceableForward`).
                pub fn to_onnx_with(
                    &self,
                    _path: impl ::core::convert::AsRef<::std::path::Path>,
                    _input: &#tch::Tensor,
                ) -> #lit::Result<()> #bound {
                    ::core::unreachable!()
                }
            }
        }
    });
    quote!(#traced #untraceable)
}

/// The table's method for one user hook definition: the full signature, calling the user's
/// method with the parameters it declared and converting what it returns. It carries the
/// method's cfgs, so that it exists exactly when the user's method does and can never resolve
/// to itself.
fn hook_method(lit: &TokenStream, self_ty: &Type, h: &HookFn) -> TokenStream {
    let hook = h.hook;
    let name = &h.ident;
    let cfgs = cfg_attrs(&h.cfgs);
    let names: Vec<Ident> = hook.params.iter().map(|p| format_ident!("_{}", p.name)).collect();
    let types = hook.params.iter().map(|p| p.ty.tokens(lit));
    let params = names.iter().zip(types).map(|(n, t)| quote!(#n: #t));
    let generics = hook.generic.then(|| quote!(<B: #lit::data::Batch>));
    let receiver = if hook.shared { quote!(&self) } else { quote!(&mut self) };
    let cx = names.iter().zip(hook.params).find(|(_, p)| p.ty == Ty::Ctx).map(|(n, _)| n);
    let mut prelude = quote!();
    let args = h.args.iter().map(|a| match a.role {
        Role::Table(k) => {
            let n = &names[k];
            quote_spanned!(a.ty.span()=> #n)
        }
        Role::Hiddens => {
            prelude.extend(quote!(let __lit_hiddens = #lit::__private::take_hiddens(#cx)?;));
            quote!(__lit_hiddens)
        }
        Role::OptimizerIdx => {
            prelude.extend(quote!(let __lit_optimizer_idx = #cx.optimizer_idx();));
            quote!(__lit_optimizer_idx)
        }
    });
    let args: Vec<TokenStream> = args.collect();
    let span = match &h.output {
        syn::ReturnType::Type(_, ty) => ty.span(),
        syn::ReturnType::Default => name.span(),
    };
    // The call carries the return type's span (so a return type the hook cannot return is
    // reported there); its arguments keep the spans of the user's parameters.
    let callee = respan(&quote!(<#self_ty>::#name), span);
    let mut arguments = Group::new(proc_macro2::Delimiter::Parenthesis, quote!(self, #(#args),*));
    arguments.set_span(span);
    let call = quote!(#callee #arguments);
    let lit_r = respan(lit, span);
    let convert = match hook.ret {
        Ret::TrainStep => quote!(IntoTrainStep::into_train_step),
        Ret::EvalStep => quote!(IntoEvalStep::into_eval_step),
        Ret::Predict => quote!(IntoHookResult::<Self::Prediction>::into_hook_result),
        Ret::Value(ty) => {
            let ty = ty.tokens(lit);
            quote!(IntoHookResult::<#ty>::into_hook_result)
        }
        Ret::Optimizers => quote!(IntoOptimizers::into_optimizers),
        Ret::Exact(_) => quote!(),
        Ret::TrainLoader => quote!(IntoTrainLoader::<Self::TrainBatch>::into_train_loader),
        Ret::EvalLoaders(stage) => {
            let batch = Ty::Batch(stage).tokens(lit);
            quote!(IntoEvalLoaders::<#batch>::into_eval_loaders)
        }
    };
    let ret = hook.ret.table_type(lit);
    let body = if convert.is_empty() {
        call
    } else {
        let convert = respan(&convert, span);
        quote_spanned!(span=> #lit_r::__private::#convert(#call))
    };
    quote! {
        #cfgs
        #[allow(clippy::needless_question_mark, clippy::unit_arg)]
        #[deny(unconditional_recursion)]
        fn #name #generics(#receiver, #(#params),*) -> #ret {
            #prelude
            #body
        }
    }
}

// ----- #[hparams] -----

pub(crate) fn hparams(args: TokenStream, input: TokenStream) -> TokenStream {
    let out = match syn::parse2::<syn::ItemStruct>(input.clone()) {
        Ok(item) => hparams_struct(args, item),
        Err(_) => {
            let e = syn::Error::new(Span::call_site(), "`#[hparams]` goes on a struct with named fields")
                .to_compile_error();
            quote!(#input #e)
        }
    };
    debug_print("hparams", &out);
    out
}

fn hparams_struct(args: TokenStream, mut item: syn::ItemStruct) -> TokenStream {
    let mut errors = Errors::default();
    let opts = HparamsOptions::parse(args).unwrap_or_else(|e| {
        errors.add(e);
        HparamsOptions::default()
    });
    let lit = opts.krate.as_ref().map_or(quote!(::lit), |p| quote!(#p));
    let serde_path = format!("{}::__private::serde", lit.to_string().replace(' ', ""));
    let ident = item.ident.clone();
    let mut defaults = Vec::new();
    let mut all_default = true;
    match &mut item.fields {
        syn::Fields::Named(fields) => {
            for field in fields.named.iter_mut() {
                let field_ident = field.ident.clone().expect("named field");
                let Some(attr) = take_attr(&mut field.attrs, "hparams") else {
                    all_default = false;
                    continue;
                };
                let parsed = match &attr.meta {
                    syn::Meta::List(list) => darling::ast::NestedMeta::parse_meta_list(list.tokens.clone())
                        .map_err(darling::Error::from)
                        .and_then(|items| <FieldOptions as darling::FromMeta>::from_list(&items)),
                    _ => Err(darling::Error::custom("write `#[hparams(default = value)]`").with_span(&attr)),
                };
                match parsed {
                    Ok(FieldOptions { default: Some(default) }) => {
                        let expr = default.to_code();
                        let f = format_ident!("__lit_hparams_default_{}_{}", ident, field_ident);
                        let f_name = f.to_string();
                        let ty = &field.ty;
                        field.attrs.push(syn::parse_quote!(#[serde(default = #f_name)]));
                        defaults.push((
                            field_ident,
                            f.clone(),
                            quote! {
                                #[doc(hidden)]
                                #[allow(non_snake_case)]
                                fn #f() -> #ty {
                                    #expr
                                }
                            },
                        ));
                    }
                    Ok(FieldOptions { default: None }) => {
                        all_default = false;
                        errors.push(&attr, "write `#[hparams(default = value)]`");
                    }
                    Err(e) => {
                        all_default = false;
                        errors.add(syn::Error::new(
                            e.span(),
                            e.to_string().replace("Unknown field", "unknown `hparams` field option"),
                        ));
                    }
                }
            }
        }
        _ => errors.push(&item.ident, "`#[hparams]` needs a struct with named fields"),
    }
    let errors = errors.into_compile_errors();
    if !errors.is_empty() {
        return quote!(#item #errors);
    }
    let field_docs = field_docs_impl(&lit, &item);
    let default_fns = defaults.iter().map(|(_, _, f)| f);
    let default_impl = (all_default && !defaults.is_empty()).then(|| {
        let fields = defaults.iter().map(|(field, f, _)| quote!(#field: #f()));
        quote! {
            #[automatically_derived]
            impl ::core::default::Default for #ident {
                fn default() -> Self {
                    #ident { #(#fields),* }
                }
            }
        }
    });
    quote! {
        #[derive(::core::clone::Clone, ::core::fmt::Debug, #lit::__private::serde::Serialize, #lit::__private::serde::Deserialize)]
        #[serde(crate = #serde_path)]
        #item

        #(#default_fns)*
        #default_impl

        #[automatically_derived]
        impl #lit::Hparams for #ident {}

        #field_docs
    }
}

// ----- #[derive(FieldDocs)] -----

pub(crate) fn field_docs(input: TokenStream) -> TokenStream {
    let out = match syn::parse2::<syn::ItemStruct>(input) {
        Ok(item) if matches!(item.fields, syn::Fields::Named(_)) => field_docs_impl(&quote!(::lit), &item),
        Ok(item) => syn::Error::new_spanned(&item.ident, "`FieldDocs` is derived for structs with named fields")
            .to_compile_error(),
        Err(e) => e.to_compile_error(),
    };
    debug_print("derive(FieldDocs)", &out);
    out
}

/// `impl lit::cli::FieldDocs`: each named field's doc comment, its lines joined, in declaration
/// order (fields without one are left out).
fn field_docs_impl(lit: &TokenStream, item: &syn::ItemStruct) -> TokenStream {
    let ident = &item.ident;
    let (impl_generics, ty_generics, where_clause) = item.generics.split_for_impl();
    let entries = item.fields.iter().filter_map(|field| {
        let name = field.ident.as_ref()?.to_string();
        let name = name.strip_prefix("r#").unwrap_or(&name).to_string();
        let doc = doc_text(&field.attrs)?;
        Some(quote!((#name, #doc)))
    });
    quote! {
        #[automatically_derived]
        impl #impl_generics #lit::cli::FieldDocs for #ident #ty_generics #where_clause {
            fn field_docs() -> &'static [(&'static str, &'static str)] {
                &[#(#entries),*]
            }
        }
    }
}

/// The `///` lines of `attrs`, trimmed and joined by spaces; `None` without any.
fn doc_text(attrs: &[syn::Attribute]) -> Option<String> {
    let lines: Vec<String> = attrs
        .iter()
        .filter(|a| a.path().is_ident("doc"))
        .filter_map(|a| match &a.meta {
            syn::Meta::NameValue(syn::MetaNameValue {
                value: syn::Expr::Lit(syn::ExprLit { lit: syn::Lit::Str(s), .. }),
                ..
            }) => Some(s.value().trim().to_string()),
            _ => None,
        })
        .filter(|line| !line.is_empty())
        .collect();
    (!lines.is_empty()).then(|| lines.join(" "))
}
