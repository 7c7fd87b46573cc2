//! netns-test as a sync-only user builds it: `default-features = false`
//! leaves tokio out of the build, sync tests run as usual, and what needs
//! the `tokio` feature says so at compile time.
//!
//! And the README's first snippet, copied into a fresh crate with the
//! dependencies its install lines add, builds without a warning and passes.
//!
//! Each test builds a scratch crate with cargo, as a user would, with this
//! checkout by path and its lock file (`--offline`: the dependencies are the
//! ones this build fetched). Both share one target directory, so netns-test
//! compiles once for them.

#![cfg(target_os = "linux")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A scratch crate `name` with `tests/it.rs` = `source`, netns-test by path
/// without its default features.
fn scratch(name: &str, source: &str) -> PathBuf {
    scratch_with(
        name,
        source,
        "netns-test = { path = \"{repo}\", default-features = false }",
    )
}

/// A scratch crate `name` with `tests/it.rs` = `source` and these
/// dev-dependencies (`{repo}` is this checkout).
fn scratch_with(name: &str, source: &str, dependencies: &str) -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("features")
        .join(name);
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::create_dir_all(dir.join("tests")).unwrap();
    std::fs::write(
        dir.join("Cargo.toml"),
        format!(
            "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n\
             [dev-dependencies]\n{}\n\n[workspace]\n",
            dependencies.replace("{repo}", &repo.display().to_string())
        ),
    )
    .unwrap();
    std::fs::write(dir.join("src/lib.rs"), "").unwrap();
    std::fs::write(dir.join("tests/it.rs"), source).unwrap();
    std::fs::copy(repo.join("Cargo.lock"), dir.join("Cargo.lock")).unwrap();
    dir
}

fn cargo(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO"))
        .args(args)
        .arg("--offline")
        .current_dir(dir)
        .env(
            "CARGO_TARGET_DIR",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("features/target"),
        )
        .env_remove("CARGO_BUILD_TARGET_DIR")
        .output()
        .unwrap()
}

/// Runs the scratch crate's tests and asserts that all `count` pass
/// (`context` heads the failure message); returns cargo's stderr.
fn its_tests_pass(dir: &Path, count: usize, context: &str) -> String {
    let test = cargo(dir, &["test", "--test", "it"]);
    let stdout = text(&test.stdout);
    let stderr = text(&test.stderr);
    assert!(
        test.status.success() && stdout.contains(&format!("test result: ok. {count} passed")),
        "{context}{stdout}\n{stderr}"
    );
    stderr
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn without_default_features_sync_tests_build_without_tokio_and_pass() {
    let dir = scratch(
        "sync-only",
        r#"
use netns_test::{netns_test, NetNs};

#[netns_test]
fn binds_port_80() {
    let listener = std::net::TcpListener::bind("127.0.0.1:80").unwrap();
    drop(listener);
}

#[netns_test]
fn runs_a_closure_inside() {
    let ns = NetNs::current();
    assert_eq!(ns.run(|| NetNs::current()), ns);
}
"#,
    );
    let tree = cargo(&dir, &["tree", "-e", "normal,dev", "--prefix", "none"]);
    assert!(tree.status.success(), "{}", text(&tree.stderr));
    let tree = text(&tree.stdout);
    assert!(tree.contains("netns-test v"), "{tree}");
    assert!(
        !tree.lines().any(|l| l.starts_with("tokio ")),
        "tokio is in the build without the `tokio` feature:\n{tree}"
    );
    its_tests_pass(&dir, 2, "");
}

#[test]
fn without_the_tokio_feature_async_tests_block_on_and_spawn_async_say_what_is_missing() {
    let dir = scratch(
        "needs-tokio",
        r#"
use netns_test::{netns_test, NetNs};

#[netns_test]
async fn an_async_test() {}

#[netns_test]
fn runs_futures() {
    let one = NetNs::current().block_on(async { 1 });
    let task = NetNs::current().spawn_async(async { 1 });
    drop((one, task));
}
"#,
    );
    let build = cargo(&dir, &["test", "--no-run", "--test", "it"]);
    assert!(!build.status.success());
    let stderr = text(&build.stderr);
    for (message, at) in [
        (
            "error[E0277]: an `async fn` #[netns_test] needs netns-test's `tokio` feature, which is off",
            "tests/it.rs:5:1",
        ),
        (
            "error[E0277]: `NetNs::block_on` needs netns-test's `tokio` feature, which is off",
            "tests/it.rs:9:41",
        ),
        (
            "error[E0277]: `NetNs::spawn_async` needs netns-test's `tokio` feature, which is off",
            "tests/it.rs:10:45",
        ),
    ] {
        let found = stderr
            .find(message)
            .unwrap_or_else(|| panic!("no `{message}` in:\n{stderr}"));
        assert!(
            stderr[found..]
                .lines()
                .nth(1)
                .is_some_and(|l| l.ends_with(at)),
            "`{message}` is not at {at}:\n{stderr}"
        );
    }
    assert_eq!(
        stderr
            .matches("features = [\"tokio\"] }` (it is a default feature)")
            .count(),
        3,
        "{stderr}"
    );
    assert_eq!(stderr.matches("error[").count(), 3, "{stderr}");
}

#[test]
fn the_readme_first_snippet_builds_without_warnings_and_passes() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    // What these lines add to Cargo.toml is what the scratch crate gets.
    for line in [
        "cargo add --dev netns-test\n",
        "cargo add --dev tokio --features net ",
    ] {
        assert!(readme.contains(line), "README.md lost `{line}`");
    }
    let start = readme.find("```rust\n").expect("a Rust snippet") + "```rust\n".len();
    let snippet = &readme[start..start + readme[start..].find("```\n").unwrap()];
    let dir = scratch_with(
        "readme",
        snippet,
        "netns-test = { path = \"{repo}\" }\ntokio = { version = \"1\", features = [\"net\"] }",
    );
    let build = cargo(&dir, &["test", "--no-run", "--test", "it"]);
    let stderr = text(&build.stderr);
    assert!(build.status.success(), "{stderr}");
    assert!(!stderr.contains("warning"), "{stderr}");
    its_tests_pass(&dir, 2, "");
}

/// The attribute's examples (its documentation, `macros/src/attribute.md`)
/// as tests of a fresh crate, each in a module of its own: as doctests they
/// only expand, since a `#[test]` function is compiled only under `--test`.
#[test]
fn the_attribute_examples_run_as_tests() {
    let docs = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("macros/src/attribute.md"),
    )
    .unwrap();
    let mut source = String::new();
    let mut examples = 0;
    for (n, block) in docs.split("```rust\n").skip(1).enumerate() {
        let code = &block[..block.find("```\n").unwrap()];
        source.push_str(&format!("mod example_{n} {{\n"));
        for line in code.lines() {
            let line = match line.strip_prefix("# ") {
                Some("fn main() {}") => continue,
                // The renamed dependency, as a module-level alias.
                Some("extern crate netns_test as nt;") => "use netns_test as nt;",
                Some(hidden) => hidden,
                None => line,
            };
            source.push_str(line);
            source.push('\n');
        }
        source.push_str("}\n");
        examples += 1;
    }
    assert!(examples >= 10, "{examples} examples in attribute.md");
    let tests = source.matches("\nfn ").count() + source.matches("\nasync fn ").count();
    let dir = scratch_with(
        "attribute-examples",
        &source,
        "netns-test = { path = \"{repo}\" }\n\
         tokio = { version = \"1\", features = [\"net\", \"time\", \"test-util\"] }",
    );
    let stderr = its_tests_pass(&dir, tests, &format!("{source}\n"));
    assert!(!stderr.contains("warning"), "{stderr}");
}
