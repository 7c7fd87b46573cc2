//! The `#[netns_test]` attribute. Use it through the `netns-test` crate, which
//! re-exports it as `netns_test::netns_test` and `netns_test::test`; its
//! documentation describes what a test sees.

mod expand;
mod options;

use proc_macro::TokenStream;

/// Runs the test in a fresh network namespace. See the `netns-test` crate.
#[proc_macro_attribute]
pub fn netns_test(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::expand(args.into(), item.into()).into()
}
