#[netns_test::netns_test(veth(mtu = 500))]
fn t() {}
fn main() {}
