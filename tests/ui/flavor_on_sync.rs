#[netns_test::netns_test(flavor = "multi_thread")]
fn t() {}
fn main() {}
