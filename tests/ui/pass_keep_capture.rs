#[netns_test::netns_test(keep = "failed", capture)]
fn a() {}

#[netns_test::netns_test(keep = "all", capture = "all")]
fn b() {}

fn main() {}
