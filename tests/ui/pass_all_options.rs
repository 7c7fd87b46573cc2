#[netns_test::netns_test(timeout = "1m30s", flavor = "multi_thread", worker_threads = 2, crate = "::netns_test")]
async fn t() -> Result<(), std::io::Error> {
    Ok(())
}
fn main() {}
