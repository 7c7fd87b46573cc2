#[netns_test::netns_test]
fn t(_port: u16) {}
fn main() {}
