//! The `#[netns_test]` attribute of the [netns-test] crate, which re-exports
//! it as `netns_test::netns_test` and `netns_test::test`: depend on
//! netns-test, not on this crate. Its documentation is the attribute's.
//!
//! [netns-test]: https://docs.rs/netns-test

mod expand;
mod options;

use proc_macro::TokenStream;

#[doc = include_str!("attribute.md")]
#[proc_macro_attribute]
pub fn netns_test(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::expand(args.into(), item.into()).into()
}

/// The attribute's documentation as a string literal, so that the runtime
/// crate runs its examples as doctests (this crate cannot: it cannot depend
/// on the runtime crate). Not a public API.
#[doc(hidden)]
#[proc_macro]
pub fn __attribute_docs(_input: TokenStream) -> TokenStream {
    TokenStream::from(proc_macro::TokenTree::Literal(proc_macro::Literal::string(
        include_str!("attribute.md"),
    )))
}
