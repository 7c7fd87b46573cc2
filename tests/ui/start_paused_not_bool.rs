#[netns_test::netns_test(start_paused = "yes")]
async fn t() {}
fn main() {}
