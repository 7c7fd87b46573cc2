#[netns_test::netns_test(veth_pair = 1)]
fn t() {}
fn main() {}
