#[netns_test::netns_test(timeout = 10)]
fn t() {}
fn main() {}
