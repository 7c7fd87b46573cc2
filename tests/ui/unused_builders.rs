// A builder whose result is dropped does nothing: the compiler says so.
#![deny(unused_must_use)]
use netns_test::{Impairment, Schedule};

fn main() {
    let base = Impairment::new();
    base.loss(5.0);
    Schedule::new().repeat();
}
