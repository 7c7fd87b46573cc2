#[netns_test::netns_test(veth(ipv6 = "2001:db8::2", host_ipv6 = "2001:db8::1/64"))]
fn t() {}
fn main() {}
