use netns_test::netns_test;

/// An inner attribute as the body's first line stays in the body.
#[netns_test]
fn inner_attribute() {
    #![allow(unused_variables)]
    let unused = 1;
}

#[netns_test(timeout = "5s")]
async fn inner_attribute_async() -> Result<(), std::io::Error> {
    #![allow(clippy::needless_return)]
    return Ok(());
}

fn main() {}
