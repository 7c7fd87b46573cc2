#[netns_test::netns_test(keep = "sometimes")]
fn t() {}
fn main() {}
