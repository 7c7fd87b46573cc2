use netns_test::{NetNs, netns_test};
#[netns_test]
fn binds_80() {
    let l = std::net::TcpListener::bind("127.0.0.1:80").unwrap();
    drop(l);
    let names: Vec<_> = std::fs::read_dir("/sys/class/net")
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["lo"]);
    println!("{:?}", NetNs::current());
}
#[netns_test]
async fn async_binds() {
    let l = tokio::net::TcpListener::bind("[::1]:80").await.unwrap();
    drop(l);
}
