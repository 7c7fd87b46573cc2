//! The expansion of `#[netns_test]`, as a function of token streams so that it
//! can be unit-tested without a compiler session.
//!
//! The generated function keeps its name, attributes, visibility and return
//! type; its body moves into a nested function that the runtime calls once the
//! thread is in a fresh network namespace:
//!
//! ```text
//! #[attributes as written]
//! #[::core::prelude::v1::test]          // only when no test attribute is present
//! fn name() -> R {
//!     static __NETNS_TEST: TestSpec = TestSpec { .. };
//!     fn __netns_test_body() -> R { <body> }
//!     ::netns_test::__private::run(&__NETNS_TEST, __netns_test_body).finish()
//! }
//! ```
//!
//! An `async fn` body becomes `async fn __netns_test_async() -> R { <body> }`
//! and `__netns_test_body` calls `block_on(&__NETNS_TEST, __netns_test_async())`.

use crate::options::{Flavor, Options};
use proc_macro2::TokenStream;
use quote::{ToTokens, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Attribute, ItemFn};

/// What an attribute on the test function means to `#[netns_test]`.
#[derive(Debug, PartialEq, Eq)]
enum AttrKind {
    /// `#[test]` or `#[::core::prelude::v1::test]`: the function is already a test.
    BuiltinTest,
    /// `#[netns_test]` or `#[netns_test::test]` once more.
    NetnsTest,
    /// An attribute that wraps the function itself and then marks it as a test,
    /// such as `#[tokio::test]`, `#[test_log::test]` or `#[rstest]`:
    /// `#[netns_test]` must run below it.
    Wrapper,
    ShouldPanic,
    Other,
}

fn classify(attr: &Attribute) -> AttrKind {
    let path = attr.path();
    let names: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
    let last = names.last().map(String::as_str).unwrap_or("");
    let is_std_prelude_test = names.len() == 4
        && (names[0] == "core" || names[0] == "std")
        && names[1] == "prelude"
        && last == "test";
    let bare = names.len() == 1 && path.leading_colon.is_none();
    if (bare && last == "test") || is_std_prelude_test {
        AttrKind::BuiltinTest
    } else if last == "netns_test"
        || (names.len() >= 2 && names[names.len() - 2] == "netns_test" && last == "test")
    {
        AttrKind::NetnsTest
    } else if last == "test" || last == "rstest" {
        AttrKind::Wrapper
    } else if bare && last == "should_panic" {
        AttrKind::ShouldPanic
    } else {
        AttrKind::Other
    }
}

/// Expands `#[netns_test(args)]` on `item`.
pub fn expand(args: TokenStream, item: TokenStream) -> TokenStream {
    let function: ItemFn = match syn::parse2(item.clone()) {
        Ok(function) => function,
        Err(_) => {
            let error = syn::Error::new(
                first_token_span(&item),
                "#[netns_test] applies to a test function, like `#[netns_test] fn binds_port_80() { .. }`",
            )
            .to_compile_error();
            return quote!(#error #item);
        }
    };
    let options = match Options::parse(args) {
        Ok(options) => options,
        Err(error) => return with_error(error, &function),
    };

    if let Some(again) = function
        .attrs
        .iter()
        .find(|a| classify(a) == AttrKind::NetnsTest)
    {
        let error = syn::Error::new_spanned(
            again,
            "#[netns_test] is applied twice to this function: keep one (`#[netns_test]` and `#[netns_test::test]` are the same attribute)",
        );
        return with_error(error, &function);
    }

    // Another attribute wraps the function (tokio::test, rstest, ...): let it
    // expand first and apply #[netns_test] to what it produces. The path form
    // `::netns_test::test` ends in `test`, so rstest takes it as the test
    // attribute and supports async cases with it.
    // It goes last, next to the function: rstest reads the `#[case]`
    // attributes that follow it only up to the first foreign attribute.
    if function
        .attrs
        .iter()
        .any(|a| classify(a) == AttrKind::Wrapper)
    {
        let mut function = function;
        let krate = &options.krate;
        let raw = &options.raw;
        let moved: Attribute = syn::parse_quote!(#[#krate::test(#raw)]);
        function.attrs.push(moved);
        return function.into_token_stream();
    }

    match generate(&options, &function) {
        Ok(tokens) => tokens,
        Err(error) => with_error(error, &function),
    }
}

fn generate(options: &Options, function: &ItemFn) -> syn::Result<TokenStream> {
    let sig = &function.sig;
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        return Err(syn::Error::new_spanned(
            &sig.generics,
            "a #[netns_test] function cannot be generic: the test harness calls it with no type arguments",
        ));
    }
    if !sig.inputs.is_empty() {
        return Err(syn::Error::new_spanned(
            &sig.inputs,
            "a #[netns_test] function takes no parameters, since nothing would supply them; to parametrize it, add #[rstest] (above or below #[netns_test]) and use #[case], #[values] or fixtures",
        ));
    }
    let is_async = sig.asyncness.is_some();
    if !is_async {
        let misplaced = options
            .flavor
            .as_ref()
            .map(|f| f.1)
            .or(options.worker_threads.as_ref().map(|w| w.1))
            .or(options.start_paused.as_ref().map(|p| p.1));
        if let Some(span) = misplaced {
            return Err(syn::Error::new(
                span,
                "`flavor`, `worker_threads` and `start_paused` apply to `async fn` tests, and this function is not async (if another attribute, such as #[tokio::test], builds the runtime, configure it there)",
            ));
        }
    }

    let krate = &options.krate;
    let has_test_attribute = function
        .attrs
        .iter()
        .any(|a| classify(a) == AttrKind::BuiltinTest);
    let should_panic = function
        .attrs
        .iter()
        .any(|a| classify(a) == AttrKind::ShouldPanic);
    let add_test_attribute = !has_test_attribute;

    let name = &sig.ident;
    let output = &sig.output;
    let body = &function.block;
    let attrs = &function.attrs;
    let vis = &function.vis;
    let mut outer_sig = sig.clone();
    outer_sig.asyncness = None;

    let timeout = match &options.timeout {
        Some(t) => {
            let millis = t.millis;
            let text = &t.text;
            quote!(::core::option::Option::Some(#krate::__private::Timeout { millis: #millis, text: #text }))
        }
        None => quote!(::core::option::Option::None),
    };
    let flavor = match options.flavor.as_ref().map(|f| f.0) {
        Some(Flavor::MultiThread) => quote!(#krate::__private::Flavor::MultiThread),
        _ => quote!(#krate::__private::Flavor::CurrentThread),
    };
    let worker_threads = match &options.worker_threads {
        Some((n, _)) => quote!(::core::option::Option::Some(#n)),
        None => quote!(::core::option::Option::None),
    };
    let veth = match &options.veth {
        None => quote!(::core::option::Option::None),
        Some(veth) => {
            let mtu = veth.mtu;
            let ipv4 = match &veth.ipv4 {
                None => quote!(::core::option::Option::None),
                Some(pair) => {
                    let [a, b, c, d] = pair.ns.octets();
                    let [e, f, g, h] = pair.host.octets();
                    let prefix = pair.prefix;
                    quote!(::core::option::Option::Some(#krate::__private::AddressPair {
                        ns: #krate::__private::Ipv4Addr::new(#a, #b, #c, #d),
                        host: #krate::__private::Ipv4Addr::new(#e, #f, #g, #h),
                        prefix: #prefix,
                    }))
                }
            };
            let ipv6 = match &veth.ipv6 {
                None => quote!(::core::option::Option::None),
                Some(pair) => {
                    let ns = pair.ns.segments();
                    let host = pair.host.segments();
                    let prefix = pair.prefix;
                    quote!(::core::option::Option::Some(#krate::__private::AddressPair {
                        ns: #krate::__private::Ipv6Addr::new(#(#ns),*),
                        host: #krate::__private::Ipv6Addr::new(#(#host),*),
                        prefix: #prefix,
                    }))
                }
            };
            quote!(::core::option::Option::Some(#krate::__private::VethSpec {
                mtu: #mtu,
                ipv4: #ipv4,
                ipv6: #ipv6,
            }))
        }
    };
    let policy = |p: Option<crate::options::Policy>| match p {
        None => quote!(::core::option::Option::None),
        Some(crate::options::Policy::Failed) => {
            quote!(::core::option::Option::Some(#krate::__private::Policy::Failed))
        }
        Some(crate::options::Policy::All) => {
            quote!(::core::option::Option::Some(#krate::__private::Policy::All))
        }
    };
    let keep = policy(options.keep);
    let capture = policy(options.capture);
    let finish = if should_panic {
        quote!(finish_should_panic)
    } else {
        quote!(finish)
    };
    // Added last, as tokio-macros does, so that the attributes above see it.
    let test_attribute = if add_test_attribute {
        quote!(#[::core::prelude::v1::test])
    } else {
        quote!()
    };
    // syn puts a body's inner attributes (`#![allow(..)]` as its first
    // line) with the function's; they go back into the body.
    let (inner_attrs, outer_attrs): (Vec<&Attribute>, Vec<&Attribute>) = attrs
        .iter()
        .partition(|a| matches!(a.style, syn::AttrStyle::Inner(_)));
    let stmts = &body.stmts;
    // An async body becomes a sync one that runs it on the test's runtime:
    // one entry point, instantiated once per return type.
    let body_fn = if let Some(asyncness) = &sig.asyncness {
        // Written here, in the user's crate, so that the user's tokio
        // features apply (`start_paused` needs `test-util`).
        let configure = match options.start_paused {
            Some((paused, span)) => quote_spanned! {span=>
                |builder| { builder.start_paused(#paused); }
            },
            None => quote!(|_| {}),
        };
        // Spanned on `async`: without the runtime crate's `tokio` feature,
        // the error says so there.
        let future = quote_spanned!(asyncness.span()=> __netns_test_async());
        quote! {
            async fn __netns_test_async() #output { #(#inner_attrs)* #(#stmts)* }
            fn __netns_test_body() #output {
                #krate::__private::block_on(&__NETNS_TEST, #configure, #future)
            }
        }
    } else {
        quote! {
            fn __netns_test_body() #output { #(#inner_attrs)* #(#stmts)* }
        }
    };
    // Spanned on the signature so that type errors (an unsupported return
    // type, say) point at the test function.
    let call = quote_spanned! {sig.span()=>
        #krate::__private::run(&__NETNS_TEST, __netns_test_body).#finish()
    };
    Ok(quote! {
        #(#outer_attrs)*
        #test_attribute
        #vis #outer_sig {
            static __NETNS_TEST: #krate::__private::TestSpec = #krate::__private::TestSpec {
                marker: #krate::__private::SPEC_MARKER,
                name: ::core::concat!(::core::module_path!(), "::", ::core::stringify!(#name)),
                timeout: #timeout,
                flavor: #flavor,
                worker_threads: #worker_threads,
                added_test_attribute: #add_test_attribute,
                started: #krate::__private::AtomicBool::new(false),
                veth: #veth,
                keep: #keep,
                capture: #capture,
            };
            #body_fn
            #call
        }
    })
}

/// The error, then the function as written, so that IDEs still see it.
fn with_error(error: syn::Error, function: &ItemFn) -> TokenStream {
    let error = error.to_compile_error();
    quote!(#error #function)
}

fn first_token_span(tokens: &TokenStream) -> proc_macro2::Span {
    tokens
        .clone()
        .into_iter()
        .next()
        .map(|t| t.span())
        .unwrap_or_else(proc_macro2::Span::call_site)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expanded(args: TokenStream, item: TokenStream) -> String {
        expand(args, item).to_string()
    }

    #[test]
    fn adds_test_attribute_only_when_missing() {
        let plain = expanded(
            quote!(),
            quote!(
                fn t() {}
            ),
        );
        assert!(
            plain.starts_with("# [:: core :: prelude :: v1 :: test]"),
            "{plain}"
        );
        assert!(plain.contains("added_test_attribute : true"), "{plain}");
        let with_test = expanded(
            quote!(),
            quote!(
                #[test]
                fn t() {}
            ),
        );
        assert_eq!(with_test.matches("test]").count(), 1, "{with_test}");
        assert!(
            with_test.contains("added_test_attribute : false"),
            "{with_test}"
        );
    }

    #[test]
    fn keeps_body_and_return_type() {
        let out = expanded(
            quote!(),
            quote!(
                fn t() -> Result<(), String> {
                    Err("x".into())
                }
            ),
        );
        assert!(
            out.contains(
                "fn __netns_test_body () -> Result < () , String > { Err (\"x\" . into ()) }"
            ),
            "{out}"
        );
        assert!(out.contains("fn t () -> Result < () , String >"), "{out}");
        assert!(out.contains("run (& __NETNS_TEST , __netns_test_body) . finish ()"));
    }

    #[test]
    fn inner_attributes_stay_in_the_body() {
        let out = expanded(
            quote!(),
            quote!(
                /// Doc.
                fn t() {
                    #![allow(unused_variables)]
                    let x = 1;
                }
            ),
        );
        let outer = out.find("fn t ()").unwrap();
        let inner = out.find("# ! [allow (unused_variables)]").expect(&out);
        let body = out.find("fn __netns_test_body ()").unwrap();
        assert!(body < inner, "{out}");
        assert!(out.find("# [doc").unwrap() < outer, "{out}");
    }

    #[test]
    fn the_added_test_attribute_comes_last() {
        let out = expanded(
            quote!(),
            quote!(
                #[ignore]
                #[should_panic]
                fn t() {}
            ),
        );
        let test = out.find("# [:: core :: prelude :: v1 :: test]").unwrap();
        assert!(out.find("# [ignore]").unwrap() < test, "{out}");
        assert!(out.find("# [should_panic]").unwrap() < test, "{out}");
        assert!(test < out.find("fn t ()").unwrap(), "{out}");
    }

    #[test]
    fn picks_the_entry_point() {
        let a = expanded(
            quote!(),
            quote!(
                async fn t() {}
            ),
        );
        assert!(
            a.contains("async fn __netns_test_async ()")
                && a.contains("block_on (& __NETNS_TEST , | _ | { } , __netns_test_async ())")
                && a.contains("run (& __NETNS_TEST , __netns_test_body)"),
            "{a}"
        );
        assert!(a.contains("fn t ()") && !a.contains("async fn t"), "{a}");
        let paused = expanded(
            quote!(start_paused = true),
            quote!(
                async fn t() {}
            ),
        );
        assert!(
            paused.contains(
                "block_on (& __NETNS_TEST , | builder | { builder . start_paused (true) ; } , __netns_test_async ())"
            ),
            "{paused}"
        );
        let t = expanded(
            quote!(timeout = "1m"),
            quote!(
                fn t() {}
            ),
        );
        assert!(
            t.contains("run (& __NETNS_TEST") && t.contains("millis : 60000u64"),
            "{t}"
        );
        let at = expanded(
            quote!(timeout = "1s", flavor = "multi_thread", worker_threads = 2),
            quote!(
                async fn t() {}
            ),
        );
        assert!(at.contains("block_on (") && at.contains("Flavor :: MultiThread"));
        assert!(at.contains("worker_threads : :: core :: option :: Option :: Some (2usize)"));
        let sp = expanded(
            quote!(),
            quote!(
                #[should_panic]
                fn t() {}
            ),
        );
        assert!(sp.contains("finish_should_panic"), "{sp}");
    }

    #[test]
    fn veth_becomes_a_spec() {
        let none = expanded(
            quote!(),
            quote!(
                fn t() {}
            ),
        );
        assert!(
            none.contains("veth : :: core :: option :: Option :: None"),
            "{none}"
        );
        let pooled = expanded(
            quote!(veth),
            quote!(
                fn t() {}
            ),
        );
        assert!(
            pooled
                .contains("VethSpec { mtu : 1500u32 , ipv4 : :: core :: option :: Option :: None"),
            "{pooled}"
        );
        let given = expanded(
            quote!(veth(
                ipv4 = "198.51.100.2/24",
                host_ipv4 = "198.51.100.1/24"
            )),
            quote!(
                fn t() {}
            ),
        );
        assert!(
            given.contains("Ipv4Addr :: new (198u8 , 51u8 , 100u8 , 2u8)"),
            "{given}"
        );
        assert!(given.contains("prefix : 24u8"), "{given}");
    }

    #[test]
    fn moves_below_wrapping_attributes() {
        let tokio = expanded(
            quote!(timeout = "1s"),
            quote!(
                #[tokio::test]
                async fn t() {}
            ),
        );
        assert_eq!(
            tokio,
            quote!(
                #[tokio::test]
                #[::netns_test::test(timeout = "1s")]
                async fn t() {}
            )
            .to_string()
        );
        let rs = expanded(
            quote!(),
            quote!(
                #[rstest]
                #[case(1)]
                fn t(#[case] x: u32) {}
            ),
        );
        assert_eq!(
            rs,
            quote!(
                #[rstest]
                #[case(1)]
                #[::netns_test::test()]
                fn t(#[case] x: u32) {}
            )
            .to_string()
        );
        let custom = expanded(
            quote!(crate = "my::ns"),
            quote!(
                #[rstest]
                fn t() {}
            ),
        );
        assert!(
            custom.contains("# [my :: ns :: test (crate = \"my::ns\")]"),
            "{custom}"
        );
    }

    #[test]
    fn rejects_what_cannot_run() {
        let twice = expanded(
            quote!(),
            quote!(
                #[netns_test::test]
                fn t() {}
            ),
        );
        assert!(twice.contains("applied twice"), "{twice}");
        let params = expanded(
            quote!(),
            quote!(
                fn t(x: u32) {}
            ),
        );
        assert!(params.contains("takes no parameters"), "{params}");
        let generic = expanded(
            quote!(),
            quote!(
                fn t<T>() {}
            ),
        );
        assert!(generic.contains("cannot be generic"), "{generic}");
        let flavor = expanded(
            quote!(flavor = "multi_thread"),
            quote!(
                fn t() {}
            ),
        );
        assert!(flavor.contains("apply to `async fn` tests"), "{flavor}");
        let not_fn = expanded(
            quote!(),
            quote!(
                struct S;
            ),
        );
        assert!(not_fn.contains("applies to a test function"), "{not_fn}");
        // The function is still emitted, so IDEs keep working.
        assert!(params.contains("fn t (x : u32)"), "{params}");
    }
}
