#[netns_test::netns_test(veth(mtu = 80, colour = "red", ipv4 = "198.51.100.2/24"))]
fn t() {}

fn main() {}
