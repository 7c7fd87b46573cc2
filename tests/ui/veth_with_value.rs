#[netns_test::netns_test(veth = true)]
fn t() {}
fn main() {}
