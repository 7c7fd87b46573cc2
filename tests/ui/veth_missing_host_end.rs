#[netns_test::netns_test(veth(ipv4 = "198.51.100.2/24"))]
fn t() {}
fn main() {}
