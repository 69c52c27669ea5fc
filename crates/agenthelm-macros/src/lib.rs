//! The `#[tool]` attribute of AgentHelm. Use it through `agenthelm::tool` (or the prelude);
//! the generated code refers to the `agenthelm` crate.

use proc_macro::TokenStream;
use proc_macro2::TokenStream as TokenStream2;
use quote::{format_ident, quote};
use syn::punctuated::Punctuated;
use syn::{
    parse_macro_input, Attribute, Expr, ExprLit, FnArg, Ident, ItemFn, Lit, LitBool, LitStr, Meta,
    Pat, ReturnType, Token, Type,
};

/// Turns a function into an AgentHelm tool.
///
/// The function keeps working as a plain function. Beside it, a hidden type of the same name
/// implements `agenthelm::tool::Tool`, so `tools![my_fn]` builds a tool set from it.
///
/// - The tool's name is the function's name; its description is the doc comment.
/// - The arguments' JSON schema comes from the parameters (types implementing
///   `serde::Deserialize` and `schemars::JsonSchema`); doc comments on parameters become field
///   descriptions; `Option<T>` parameters are optional.
/// - The function may be `async`, and may return `T` or `Result<T, E>` with `T: Serialize` and
///   `E: Display`. A sync function runs on tokio's blocking pool (so its result must be `Send`),
///   which lets its timeout and its step's cancellation work even when it blocks.
///
/// Options: `name = "..."`, `description = "..."`, `compensating_tool = "..."`,
/// `requires_approval` (or `= true/false`), `retries = N`, `timeout = SECONDS`,
/// `tags = ["..."]`, `side_effects = ["..."]`, `partial_effects`.
#[proc_macro_attribute]
pub fn tool(attr: TokenStream, item: TokenStream) -> TokenStream {
    let mut options = Options::default();
    let parser = syn::meta::parser(|meta| options.parse(meta));
    parse_macro_input!(attr with parser);
    let function = parse_macro_input!(item as ItemFn);
    expand(options, function)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

#[derive(Default)]
struct Options {
    name: Option<String>,
    description: Option<String>,
    compensating_tool: Option<String>,
    requires_approval: bool,
    retries: u32,
    timeout: Option<f64>,
    tags: Vec<String>,
    side_effects: Vec<String>,
    partial_effects: bool,
}

const OPTION_NAMES: &str = "name, description, compensating_tool, requires_approval, retries, \
                            timeout, tags, side_effects, partial_effects";

impl Options {
    fn parse(&mut self, meta: syn::meta::ParseNestedMeta) -> syn::Result<()> {
        let key = meta
            .path
            .get_ident()
            .map(ToString::to_string)
            .unwrap_or_default();
        match key.as_str() {
            "name" => self.name = Some(meta.value()?.parse::<LitStr>()?.value()),
            "description" => self.description = Some(meta.value()?.parse::<LitStr>()?.value()),
            "compensating_tool" => {
                self.compensating_tool = Some(meta.value()?.parse::<LitStr>()?.value())
            }
            "requires_approval" => self.requires_approval = flag(&meta)?,
            "partial_effects" => self.partial_effects = flag(&meta)?,
            "retries" => self.retries = meta.value()?.parse::<syn::LitInt>()?.base10_parse()?,
            "timeout" => {
                let seconds = match meta.value()?.parse::<Lit>()? {
                    Lit::Int(i) => i.base10_parse::<u64>()? as f64,
                    Lit::Float(f) => f.base10_parse::<f64>()?,
                    other => {
                        return Err(syn::Error::new(
                            other.span(),
                            "timeout is a number of seconds",
                        ))
                    }
                };
                if !(seconds > 0.0 && seconds.is_finite()) {
                    return Err(meta.error("timeout must be a positive number of seconds"));
                }
                self.timeout = Some(seconds);
            }
            "tags" => self.tags = string_list(&meta)?,
            "side_effects" => self.side_effects = string_list(&meta)?,
            _ => {
                return Err(meta.error(format!(
                    "unknown #[tool] option; expected one of: {OPTION_NAMES}"
                )))
            }
        }
        Ok(())
    }
}

/// `flag` alone means true; `flag = false` is allowed too.
fn flag(meta: &syn::meta::ParseNestedMeta) -> syn::Result<bool> {
    if meta.input.peek(Token![=]) {
        Ok(meta.value()?.parse::<LitBool>()?.value)
    } else {
        Ok(true)
    }
}

fn string_list(meta: &syn::meta::ParseNestedMeta) -> syn::Result<Vec<String>> {
    let value = meta.value()?;
    let content;
    syn::bracketed!(content in value);
    let items = Punctuated::<LitStr, Token![,]>::parse_terminated(&content)?;
    Ok(items.iter().map(LitStr::value).collect())
}

struct Param {
    name: Ident,
    ty: Type,
    docs: Vec<Attribute>,
}

fn expand(options: Options, mut function: ItemFn) -> syn::Result<TokenStream2> {
    let fn_name = function.sig.ident.clone();
    let tool_name = options.name.clone().unwrap_or_else(|| fn_name.to_string());
    let description = match options.description.clone() {
        Some(d) => d,
        None => doc_text(&function.attrs).ok_or_else(|| {
            syn::Error::new(
                fn_name.span(),
                format!(
                    "#[tool] needs a description for the model: add a doc comment (///) to `{fn_name}` \
                     or write #[tool(description = \"...\")]"
                ),
            )
        })?,
    };
    if !function.sig.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(
            &function.sig.generics,
            "#[tool] functions cannot be generic: the argument schema must be known",
        ));
    }
    let params = take_params(&mut function)?;
    let is_async = function.sig.asyncness.is_some();
    let returns_result = returns_result(&function.sig.output);

    let vis = &function.vis;
    let args_struct = format_ident!("__{}Args", fn_name);
    let field_names: Vec<&Ident> = params.iter().map(|p| &p.name).collect();
    let fields = params.iter().map(|p| {
        let (name, ty, docs) = (&p.name, &p.ty, &p.docs);
        let default = is_option(ty).then(|| quote!(#[serde(default)]));
        quote!(#(#docs)* #default #name: #ty)
    });
    let call = if is_async {
        quote!(#fn_name(#(__args.#field_names),*).await)
    } else {
        // A sync body may block: it runs on the blocking pool so timeouts and cancellation hold.
        quote!(::agenthelm::tool::run_blocking(#tool_name, move || #fn_name(#(__args.#field_names),*)).await?)
    };
    let unwrap_result = returns_result
        .then(|| quote!(let __out = __out.map_err(::agenthelm::tool::into_tool_error)?;));
    let contract = contract_tokens(&options);

    Ok(quote! {
        #function

        #[doc(hidden)]
        #[allow(non_camel_case_types)]
        #[derive(Default, Debug, Clone, Copy)]
        #vis struct #fn_name {}

        const _: () = {
            #[derive(::agenthelm::__private::serde::Deserialize, ::agenthelm::__private::schemars::JsonSchema)]
            #[serde(crate = "::agenthelm::__private::serde")]
            #[schemars(crate = "::agenthelm::__private::schemars")]
            #[allow(non_camel_case_types)]
            struct #args_struct { #(#fields),* }

            #[::agenthelm::__private::async_trait]
            impl ::agenthelm::tool::Tool for #fn_name {
                fn spec(&self) -> &::agenthelm::tool::ToolSpec {
                    static SPEC: ::std::sync::OnceLock<::agenthelm::tool::ToolSpec> = ::std::sync::OnceLock::new();
                    SPEC.get_or_init(|| {
                        let mut spec = ::agenthelm::tool::ToolSpec::new(
                            #tool_name,
                            #description,
                            ::agenthelm::tool::schema::of::<#args_struct>(),
                        );
                        #contract
                        spec
                    })
                }

                async fn call(
                    &self,
                    args: ::agenthelm::__private::serde_json::Value,
                    _call: &::agenthelm::tool::ToolCallInfo,
                ) -> ::std::result::Result<::agenthelm::__private::serde_json::Value, ::agenthelm::tool::ToolError> {
                    let __args: #args_struct = ::agenthelm::tool::parse_args(#tool_name, args)?;
                    let __out = #call;
                    #unwrap_result
                    ::agenthelm::tool::to_output(#tool_name, &__out)
                }
            }
        };
    })
}

fn contract_tokens(options: &Options) -> TokenStream2 {
    let mut out = TokenStream2::new();
    if let Some(comp) = &options.compensating_tool {
        out.extend(quote!(spec.contract.compensating_tool = ::std::option::Option::Some(#comp.to_owned());));
    }
    if options.requires_approval {
        out.extend(quote!(spec.contract.requires_approval = true;));
    }
    if options.partial_effects {
        out.extend(quote!(spec.contract.partial_effects = true;));
    }
    let retries = options.retries;
    if retries > 0 {
        out.extend(quote!(spec.contract.retries = #retries;));
    }
    if let Some(seconds) = options.timeout {
        out.extend(quote!(spec.contract.timeout = ::std::option::Option::Some(::std::time::Duration::from_secs_f64(#seconds));));
    }
    let (tags, effects) = (&options.tags, &options.side_effects);
    if !tags.is_empty() {
        out.extend(quote!(spec.contract.tags = ::std::vec![#(#tags.to_owned()),*];));
    }
    if !effects.is_empty() {
        out.extend(quote!(spec.contract.side_effects = ::std::vec![#(#effects.to_owned()),*];));
    }
    out
}

/// Takes the parameters' names, types and doc comments, removing the doc comments from the
/// function (the compiler does not allow them on parameters).
fn take_params(function: &mut ItemFn) -> syn::Result<Vec<Param>> {
    let mut params = Vec::new();
    for input in function.sig.inputs.iter_mut() {
        let typed = match input {
            FnArg::Receiver(r) => {
                return Err(syn::Error::new_spanned(
                    r,
                    "#[tool] works on free functions, not methods",
                ))
            }
            FnArg::Typed(typed) => typed,
        };
        let name = match &*typed.pat {
            Pat::Ident(p) => p.ident.clone(),
            other => {
                return Err(syn::Error::new_spanned(
                    other,
                    "#[tool] parameters must be plain names (they become the argument fields)",
                ))
            }
        };
        if let Type::Reference(r) = &*typed.ty {
            return Err(syn::Error::new_spanned(
                r,
                "#[tool] parameters must be owned types (for example String instead of &str), \
                 since they are read from JSON",
            ));
        }
        let (docs, rest): (Vec<Attribute>, Vec<Attribute>) = typed
            .attrs
            .drain(..)
            .partition(|a| a.path().is_ident("doc"));
        typed.attrs = rest;
        params.push(Param {
            name,
            ty: (*typed.ty).clone(),
            docs,
        });
    }
    Ok(params)
}

fn doc_text(attrs: &[Attribute]) -> Option<String> {
    let lines: Vec<String> = attrs
        .iter()
        .filter(|a| a.path().is_ident("doc"))
        .filter_map(|a| match &a.meta {
            Meta::NameValue(nv) => match &nv.value {
                Expr::Lit(ExprLit {
                    lit: Lit::Str(s), ..
                }) => Some(s.value()),
                _ => None,
            },
            _ => None,
        })
        .map(|line| {
            line.strip_prefix(' ')
                .unwrap_or(&line)
                .trim_end()
                .to_owned()
        })
        .collect();
    let text = lines.join("\n").trim().to_owned();
    (!text.is_empty()).then_some(text)
}

fn last_segment_is(ty: &Type, name: &str) -> bool {
    match ty {
        Type::Path(p) => p.path.segments.last().is_some_and(|s| s.ident == name),
        Type::Group(g) => last_segment_is(&g.elem, name),
        Type::Paren(p) => last_segment_is(&p.elem, name),
        _ => false,
    }
}

fn returns_result(output: &ReturnType) -> bool {
    match output {
        ReturnType::Default => false,
        ReturnType::Type(_, ty) => last_segment_is(ty, "Result"),
    }
}

fn is_option(ty: &Type) -> bool {
    last_segment_is(ty, "Option")
}
