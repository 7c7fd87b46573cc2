#[netns_test::netns_test(veth)]
fn plain() {}

#[netns_test::netns_test(veth(
    mtu = 9000,
    ipv4 = "198.51.100.2/24",
    host_ipv4 = "198.51.100.1/24",
    ipv6 = "2001:db8:7::2/64",
    host_ipv6 = "2001:db8:7::1/64"
), timeout = "5s")]
async fn configured() {}

fn main() {}
