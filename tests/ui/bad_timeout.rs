#[netns_test::netns_test(timeout = "10 parsecs")]
fn t() {}
fn main() {}
