#[netns_test::netns_test(veth(ipv4 = "198.51.100.2/24", host_ipv4 = "198.51.101.1/24"))]
fn t() {}
fn main() {}
