// tokio's `test-util` feature is on in this crate's dev-dependencies, as it
// must be in a user's for `start_paused`.
#[netns_test::netns_test(start_paused = true, timeout = "10s")]
async fn t() {
    tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
}
fn main() {}
