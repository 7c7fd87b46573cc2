#[netns_test::netns_test(veth(mtu = 9000, peer = "x"))]
fn t() {}
fn main() {}
