#[netns_test::netns_test(worker_threads = 2)]
async fn t() {}
fn main() {}
