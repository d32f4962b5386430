//! The `#[served]` attribute of ipc-manager: from one `impl` block, a custom type's server
//! side (`impl ipc_manager::Served`) and its typed proxy. Use it through `ipc_manager::served`.
//!
//! ```text
//! #[served(name = "Counter", proxy = CounterProxy)]      both optional: the type's name,
//! impl Counter {                                         and <Type>Proxy
//!     pub fn add(&mut self, by: i64) -> i64 {..}         exposed: pub methods with a receiver
//!     #[served(version = 2)]                             a method's version (default 1)
//!     pub fn get(&self) -> i64 {..}
//!     #[served(name = "get", version = 1)]               an older version kept under its name
//!     pub fn get_v1(&self) -> i32 {..}
//!     pub fn history(&self, cx: &mut Context) -> ipc_manager::Result<Ref<List<i64>>> {..}
//!     #[served(expose)] fn internal(&self) {..}          a private method, exposed
//!     #[served(skip)] pub fn local(&self) {..}           a public one, not exposed
//! }
//! generates
//!   impl Served for Counter        its name, its methods' names and versions, its proxy
//!   impl Invoke for Counter        invoke(method, version, args): ("add", 1) => decode (by,),
//!                                  self.add(by), encode the result (Refs become references)
//!   pub struct CounterProxy        add(&self, by: i64) -> ipc_manager::Result<i64>, ...;
//!                                  Ref<P> in a result type is P (the proxy); a `&mut Context`
//!                                  parameter stays on the server
//! ```
//! A parameter of type `&T` travels as `T` and is decoded as `Box<T>` (so `&str` and `&[u8]`
//! work). A method returning `Result<T>` with one type argument (ipc-manager's, anyhow's)
//! fails the call with its error's message (`Error::Function`); a `Result<T, E>` is a value
//! like any other, so the client gets the method's own error type back. Methods are found by name and version, never by address: a client built as another
//! binary calls them.

use proc_macro::TokenStream;
use proc_macro2::TokenStream as Tokens;
use quote::{format_ident, quote};
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{
    Attribute, FnArg, GenericArgument, Ident, ImplItem, ImplItemFn, ItemImpl, LitInt, LitStr, Meta,
    PathArguments, ReturnType, Token, Type, Visibility,
};

/// Serves a type's methods from the manager's server and writes its proxy; see the crate's
/// notes (and `ipc_manager::Served`).
#[proc_macro_attribute]
pub fn served(attr: TokenStream, item: TokenStream) -> TokenStream {
    match expand(attr.into(), item.into()) {
        Ok(t) => t.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

/// What `#[served(...)]` says, on the block or on a method.
#[derive(Default)]
struct Options {
    name: Option<String>,
    proxy: Option<Ident>,
    version: Option<u32>,
    expose: bool,
    skip: bool,
}

fn options(tokens: Tokens, on_method: bool) -> syn::Result<Options> {
    let mut o = Options::default();
    let metas = Punctuated::<Meta, Token![,]>::parse_terminated.parse2(tokens)?;
    for meta in metas {
        match &meta {
            Meta::Path(p) if on_method && p.is_ident("expose") => o.expose = true,
            Meta::Path(p) if on_method && p.is_ident("skip") => o.skip = true,
            Meta::NameValue(nv) if nv.path.is_ident("name") => {
                o.name = Some(syn::parse2::<LitStr>(expr_tokens(&nv.value))?.value());
            }
            Meta::NameValue(nv) if !on_method && nv.path.is_ident("proxy") => {
                o.proxy = Some(syn::parse2::<Ident>(expr_tokens(&nv.value))?);
            }
            Meta::NameValue(nv) if on_method && nv.path.is_ident("version") => {
                o.version = Some(syn::parse2::<LitInt>(expr_tokens(&nv.value))?.base10_parse()?);
            }
            _ => {
                let allowed = if on_method {
                    "`name = \"..\"`, `version = N`, `expose` or `skip`"
                } else {
                    "`name = \"..\"` or `proxy = Name`"
                };
                return Err(syn::Error::new(meta.span(), format!("expected {allowed}")));
            }
        }
    }
    Ok(o)
}

fn expr_tokens(e: &syn::Expr) -> Tokens {
    quote!(#e)
}

/// Takes the `#[served(...)]` attributes off a method, and reads them.
fn method_options(attrs: &mut Vec<Attribute>) -> syn::Result<Options> {
    let mut found = Options::default();
    let mut err = None;
    attrs.retain(|a| {
        if !a.path().is_ident("served") {
            return true;
        }
        let tokens = match &a.meta {
            Meta::List(l) => l.tokens.clone(),
            _ => Tokens::new(),
        };
        match options(tokens, true) {
            Ok(o) => found = o,
            Err(e) => err = Some(e),
        }
        false
    });
    match err {
        Some(e) => Err(e),
        None => Ok(found),
    }
}

/// One exposed method.
struct Method {
    ident: Ident,
    wire_name: String,
    version: u32,
    context: bool,
    /// The wire parameters: name, type as declared.
    params: Vec<(Ident, Type)>,
    output: Option<Type>,
    docs: Vec<Attribute>,
}

fn expand(attr: Tokens, item: Tokens) -> syn::Result<Tokens> {
    let opts = options(attr, false)?;
    let mut block: ItemImpl = syn::parse2(item)?;
    if let Some((_, path, _)) = &block.trait_ {
        return Err(syn::Error::new(
            path.span(),
            "#[served] goes on a type's own impl block, not a trait impl",
        ));
    }
    if !block.generics.params.is_empty() {
        return Err(syn::Error::new(
            block.generics.span(),
            "a served type cannot be generic (its name identifies it on the server)",
        ));
    }
    let self_ty = (*block.self_ty).clone();
    let type_ident = match &self_ty {
        Type::Path(p) => p.path.segments.last().map(|s| s.ident.clone()),
        _ => None,
    }
    .ok_or_else(|| syn::Error::new(self_ty.span(), "#[served] needs a named type"))?;
    let name = opts.name.unwrap_or_else(|| type_ident.to_string());
    let proxy = opts
        .proxy
        .unwrap_or_else(|| format_ident!("{}Proxy", type_ident));

    let mut methods = Vec::new();
    for item in &mut block.items {
        let ImplItem::Fn(f) = item else { continue };
        let o = method_options(&mut f.attrs)?;
        let public = matches!(f.vis, Visibility::Public(_));
        let has_receiver = matches!(f.sig.inputs.first(), Some(FnArg::Receiver(_)));
        // Associated functions (constructors) stay local unless asked for, which is an error.
        if o.skip || !(public || o.expose) || (!has_receiver && !o.expose) {
            continue;
        }
        methods.push(method(f, o)?);
    }
    let mut seen = std::collections::HashSet::new();
    for m in &methods {
        if !seen.insert((m.wire_name.clone(), m.version)) {
            return Err(syn::Error::new(
                m.ident.span(),
                format!(
                    "two methods are served as `{}` version {}",
                    m.wire_name, m.version
                ),
            ));
        }
    }

    let arms = methods.iter().map(server_arm);
    let proxy_methods = methods.iter().map(proxy_method);
    let table = methods.iter().map(|m| {
        let (n, v) = (&m.wire_name, m.version);
        quote!((#n, #v))
    });
    let proxy_doc = format!(
        "The proxy of a [`{type_ident}`] held by a manager's server (written by `#[served]`): \
         each method is a call to the server, by name and version."
    );
    Ok(quote! {
        #block

        impl ::ipc_manager::Served for #self_ty {
            const NAME: &'static str = #name;
            const METHODS: &'static [(&'static str, u32)] = &[#(#table),*];
            type Proxy = #proxy;
        }

        impl ::ipc_manager::__private::Invoke for #self_ty {
            fn invoke(
                &mut self,
                cx: &mut ::ipc_manager::Context<'_>,
                method: &str,
                version: u32,
                args: &[u8],
            ) -> ::std::option::Option<
                ::std::result::Result<::ipc_manager::__private::Reply, ::ipc_manager::__private::Failure>,
            > {
                let _ = (&cx, &args);
                match (method, version) {
                    #(#arms)*
                    _ => ::std::option::Option::None,
                }
            }
        }

        #[doc = #proxy_doc]
        pub struct #proxy {
            h: ::ipc_manager::__private::Shared,
            _t: ::std::marker::PhantomData<()>,
        }

        ::ipc_manager::__proxy_traits!(#proxy, [#name]);

        impl #proxy {
            #(#proxy_methods)*
        }
    })
}

fn method(f: &ImplItemFn, o: Options) -> syn::Result<Method> {
    let sig = &f.sig;
    if !sig.generics.params.is_empty() || sig.asyncness.is_some() {
        return Err(syn::Error::new(
            sig.span(),
            "a served method cannot be generic or async",
        ));
    }
    let mut inputs = sig.inputs.iter();
    match inputs.next() {
        Some(FnArg::Receiver(r)) if r.reference.is_some() => {}
        _ => {
            return Err(syn::Error::new(
                sig.span(),
                "a served method takes `&self` or `&mut self`",
            ));
        }
    };
    let mut context = false;
    let mut params = Vec::new();
    for (i, input) in inputs.enumerate() {
        let FnArg::Typed(pt) = input else { continue };
        if i == 0 && is_context(&pt.ty) {
            context = true;
            continue;
        }
        let ident = format_ident!("a{}", i);
        params.push((ident, (*pt.ty).clone()));
    }
    let output = match &sig.output {
        ReturnType::Default => None,
        ReturnType::Type(_, t) => Some((**t).clone()),
    };
    Ok(Method {
        ident: sig.ident.clone(),
        wire_name: o.name.unwrap_or_else(|| sig.ident.to_string()),
        version: o.version.unwrap_or(1),
        context,
        params,
        output,
        docs: f
            .attrs
            .iter()
            .filter(|a| a.path().is_ident("doc"))
            .cloned()
            .collect(),
    })
}

/// Whether a parameter is the method's `&mut Context`.
fn is_context(ty: &Type) -> bool {
    let Type::Reference(r) = ty else { return false };
    let Type::Path(p) = &*r.elem else {
        return false;
    };
    r.mutability.is_some() && p.path.segments.last().is_some_and(|s| s.ident == "Context")
}

/// How a parameter is decoded on the server: `&T` as `Box<T>`, passed as `&*value`.
fn decoded(ty: &Type) -> (Tokens, bool) {
    match ty {
        Type::Reference(r) if r.mutability.is_none() => {
            let elem = &r.elem;
            (quote!(::std::boxed::Box<#elem>), true)
        }
        t => (quote!(#t), false),
    }
}

fn server_arm(m: &Method) -> Tokens {
    let (name, version, ident) = (&m.wire_name, m.version, &m.ident);
    let idents: Vec<&Ident> = m.params.iter().map(|(i, _)| i).collect();
    let (types, borrowed): (Vec<Tokens>, Vec<bool>) =
        m.params.iter().map(|(_, t)| decoded(t)).unzip();
    let passed = idents
        .iter()
        .zip(&borrowed)
        .map(|(i, b)| if *b { quote!(&*#i) } else { quote!(#i) });
    let cx = m.context.then(|| quote!(&mut *cx,));
    let reply = if m.output.as_ref().is_some_and(|t| fallible(t).is_some()) {
        quote!(match result {
            ::std::result::Result::Ok(value) => cx.reply(&value),
            ::std::result::Result::Err(e) => {
                ::std::result::Result::Err(::ipc_manager::__private::failed(e))
            }
        })
    } else {
        quote!(cx.reply(&result))
    };
    quote! {
        (#name, #version) => ::std::option::Option::Some((|| {
            let (#(#idents,)*): (#(#types,)*) = ::ipc_manager::__private::args(args)?;
            let result = self.#ident(#cx #(#passed),*);
            #reply
        })()),
    }
}

fn proxy_method(m: &Method) -> Tokens {
    let (name, version, ident) = (&m.wire_name, m.version, &m.ident);
    let params = m.params.iter().map(|(i, t)| quote!(#i: #t));
    let idents = m.params.iter().map(|(i, _)| i);
    // A `Result<T>` (one type argument: the error is only a message) is the call's own
    // result: `ipc_manager::Result<T>`, its error `Error::Function`.
    let output = match &m.output {
        Some(t) => {
            let t = unref(fallible(t).unwrap_or(t));
            quote!(#t)
        }
        None => quote!(()),
    };
    let docs = &m.docs;
    let version_doc = format!("Served as `{name}`, version {version}.");
    quote! {
        #(#docs)*
        #[doc = ""]
        #[doc = #version_doc]
        pub fn #ident(&self, #(#params),*) -> ::ipc_manager::Result<#output> {
            self.h.invoke(#name, #version, &(#(#idents,)*))
        }
    }
}

/// `T` of a `Result<T>` with one type argument (ipc-manager's, anyhow's, ...), whose error
/// ends the call; `None` for other types (a `Result<T, E>` is a value like any other).
fn fallible(ty: &Type) -> Option<&Type> {
    let Type::Path(p) = ty else { return None };
    let last = p.path.segments.last()?;
    if last.ident != "Result" {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    match args.args.iter().collect::<Vec<_>>().as_slice() {
        [GenericArgument::Type(t)] => Some(t),
        _ => None,
    }
}

/// `ty` with every `Ref<P>` replaced by `P`: what the client receives for it.
fn unref(ty: &Type) -> Type {
    let mut t = ty.clone();
    replace_refs(&mut t);
    t
}

fn replace_refs(ty: &mut Type) {
    match ty {
        Type::Path(p) => {
            if let Some(last) = p.path.segments.last()
                && last.ident == "Ref"
                && let PathArguments::AngleBracketed(args) = &last.arguments
                && args.args.len() == 1
                && let Some(GenericArgument::Type(inner)) = args.args.first()
            {
                let mut inner = inner.clone();
                replace_refs(&mut inner);
                *ty = inner;
                return;
            }
            for seg in &mut p.path.segments {
                if let PathArguments::AngleBracketed(args) = &mut seg.arguments {
                    for a in &mut args.args {
                        if let GenericArgument::Type(t) = a {
                            replace_refs(t);
                        }
                    }
                }
            }
        }
        Type::Tuple(t) => t.elems.iter_mut().for_each(replace_refs),
        Type::Array(a) => replace_refs(&mut a.elem),
        Type::Slice(s) => replace_refs(&mut s.elem),
        Type::Paren(p) => replace_refs(&mut p.elem),
        Type::Group(g) => replace_refs(&mut g.elem),
        _ => {}
    }
}
