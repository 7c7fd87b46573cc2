#[netns_test::netns_test]
fn t<T: Default>() {}
fn main() {}
