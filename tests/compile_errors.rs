//! Bad attribute arguments are compile errors spanned on the offending token.

#[test]
fn attribute_arguments() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/[!p]*.rs");
    cases.pass("tests/ui/pass_*.rs");
}
