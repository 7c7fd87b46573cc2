//! A test's namespaces for the time of its body: what is taken from the
//! host first, entering fresh namespaces, and at the end the reports,
//! captures, kept namespaces and the way home.

use crate::contract::{Ended, FailureKind, TestSpec};
use crate::debug::capture::{self, Capture, Finished};
use crate::debug::{keep, trace};
use crate::error::Error;
use crate::netns::{NetNs, Observer, Registration};
use crate::os::isolation::{self, Home};
use crate::os::sys::{self, NsKind};
use crate::settings::Policy;
use crate::sync::lock;
use crate::veth::VethSetup;
use std::os::fd::AsFd;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

/// What a test takes from the host before its thread leaves it. Made on
/// the thread that will enter the namespace, or, for a test with a
/// timeout, on the harness's thread; both are in the host's namespace.
pub(crate) struct HostSide {
    veth: Option<VethSetup>,
    /// The network namespace made ahead with the veth pair in it, if so.
    made_ahead: Option<std::os::fd::OwnedFd>,
}

impl HostSide {
    pub(crate) fn prepare(spec: &TestSpec) -> Result<HostSide, Ended> {
        if spec.added_test_attribute && spec.started.swap(true, Ordering::Relaxed) {
            return Err(Ended::failed(
                FailureKind::Setup,
                format!(
                    "netns-test: test `{}` started a second time in this process: it has a #[test] attribute above \
                     #[netns_test], which adds its own, so the test is registered twice. Remove that #[test] or put it below #[netns_test].",
                    spec.name
                ),
            ));
        }
        Self::prepare_for(spec).map_err(|error| Ended::setup_failed(spec.name, error))
    }

    /// The same without the check for a test started twice, for another
    /// occupant than a test. A pair made ahead (with its namespace) is taken
    /// when one fits.
    pub(crate) fn prepare_for(spec: &TestSpec) -> Result<HostSide, Error> {
        let (veth, made_ahead) = match &spec.veth {
            None => (None, None),
            Some(wanted) => match crate::veth::take_made_ahead(wanted) {
                Some(ahead) => (Some(ahead.setup), Some(ahead.ns)),
                None => (Some(VethSetup::prepare(wanted)?), None),
            },
        };
        Ok(HostSide { veth, made_ahead })
    }

    /// What deletes the veth pair (or keeps it from being made) when the
    /// test times out.
    pub(crate) fn veth(&self) -> Option<crate::veth::PairHandle> {
        self.veth.as_ref().map(VethSetup::handle)
    }
}

/// What a namespace is for, as its messages name it: a test, or the
/// command of `netns-test exec`.
pub(crate) struct Occupant {
    /// How messages name it: "test `x`", "command `make check`".
    pub(crate) subject: String,
    /// Where its captures go; `None`: the test's directory under the
    /// target directory.
    pub(crate) capture_dir: Option<capture::Location>,
    /// Whether a failure prints which network namespace it ran in.
    pub(crate) announce_failure: bool,
}

impl Occupant {
    fn test(spec: &TestSpec) -> Occupant {
        Occupant {
            subject: format!("test `{}`", spec.name),
            capture_dir: None,
            announce_failure: true,
        }
    }
}

/// The calling thread, moved into a fresh network and mount namespace for
/// the time of a test. [`TestNamespace::leave`] ends it; dropped without
/// that (a panic in netns-test itself), it still takes the thread home.
pub(crate) struct TestNamespace {
    test: &'static str,
    occupant: Occupant,
    keep: Option<Policy>,
    capture: Option<(Policy, Capture)>,
    /// The topology nodes the test makes, for keep and capture.
    nodes: Arc<Nodes>,
    _registration: Registration,
    /// The veth lease and host-side socket, held until the test ends.
    veth: Option<VethSetup>,
    /// Where the thread goes back to; `None` on the harness's own thread,
    /// which ends with the test.
    home: Option<Home>,
}

impl TestNamespace {
    /// Moves the calling thread into fresh namespaces and sets them up.
    pub(crate) fn enter(spec: &TestSpec, host: HostSide) -> Result<TestNamespace, Ended> {
        Self::enter_as(spec, host, Occupant::test(spec))
            .map_err(|error| Ended::setup_failed(spec.name, error))
    }

    /// The same for another occupant than a test.
    pub(crate) fn enter_as(
        spec: &TestSpec,
        host: HostSide,
        occupant: Occupant,
    ) -> Result<TestNamespace, Error> {
        let home = if on_own_harness_thread(spec) {
            None
        } else {
            Some(Home::here()?)
        };
        match Self::set_up_inside(spec, host, occupant) {
            Ok(mut namespace) => {
                namespace.home = home;
                Ok(namespace)
            }
            Err(error) => {
                // Never leave a thread that goes on (a tokio worker, say)
                // half in the test's namespaces.
                if let Some(home) = home {
                    if let Err(back) = home.go_back() {
                        panic!(
                            "netns-test: setting up the namespaces of test `{}` failed ({error}), \
                             and moving the thread back failed too: {back}",
                            spec.name
                        );
                    }
                }
                Err(error)
            }
        }
    }

    /// Everything from the fresh namespaces on; on error the caller takes
    /// the thread home.
    fn set_up_inside(
        spec: &TestSpec,
        host: HostSide,
        occupant: Occupant,
    ) -> Result<TestNamespace, Error> {
        let HostSide {
            mut veth,
            made_ahead,
        } = host;
        let trace = trace::Steps::new(spec.name);
        let net_id = match &made_ahead {
            Some(net) => {
                let id = isolation::isolate_into(net.as_fd())?;
                trace.step("network namespace and veth pair made ahead, new mount namespace");
                id
            }
            None => {
                let id = isolation::isolate_this_thread()?;
                trace.step("new network and mount namespace, lo up, accept_dad=0");
                id
            }
        };
        let capture_policy = spec.capture_policy();
        let capture_dir = capture_policy.map(|policy| {
            let location = occupant
                .capture_dir
                .clone()
                .unwrap_or_else(|| capture::location_for_test(spec.libtest_name()));
            (policy, location)
        });
        let capture = match &capture_dir {
            Some((policy, location)) => {
                let capture = Capture::start(location, "test.pcap", *policy)?;
                trace.step("capture started");
                Some((*policy, capture))
            }
            None => None,
        };
        if let Some(veth) = veth.as_mut().filter(|_| made_ahead.is_none()) {
            veth.create()?;
            trace.step("veth pair created");
        }
        let keep = spec.keep_policy();
        let nodes = Arc::new(Nodes {
            // Held for the end of the test only when a policy may need them:
            // otherwise a dropped Network frees its namespaces at once.
            hold: keep.is_some() || capture_dir.is_some(),
            capture_dir,
            made: Mutex::default(),
            seeds: Mutex::default(),
            faults: Mutex::default(),
            failures: Mutex::default(),
        });
        let registration = Registration::new(
            net_id,
            veth.as_ref().map(|v| v.veth().clone()),
            Arc::clone(&nodes) as Arc<dyn Observer>,
        );
        trace.step("registered");
        Ok(TestNamespace {
            test: spec.name,
            occupant,
            keep,
            capture,
            nodes,
            _registration: registration,
            veth,
            home: None,
        })
    }

    /// The veth pair to the host, when asked for.
    pub(crate) fn veth(&self) -> Option<&crate::veth::Veth> {
        self.veth.as_ref().map(VethSetup::veth)
    }

    /// Why a network of the test failed under it (its fault engine
    /// stopped), when one did: the test fails with this message.
    pub(crate) fn network_failure(&self) -> Option<String> {
        let failures = lock(&self.nodes.failures);
        (!failures.is_empty()).then(|| format!("netns-test: {}", failures.join("\nnetns-test: ")))
    }

    /// Ends the test's time in its namespaces: says where a failed test
    /// ran, stops the captures, keeps what the policy keeps, goes home.
    pub(crate) fn leave(mut self, failed: bool) {
        let trace = trace::Steps::new(self.test);
        if failed && self.occupant.announce_failure {
            self.report_namespace();
            report_seeds(&lock(&self.nodes.seeds), &lock(&self.nodes.faults));
        }
        let mut nodes = std::mem::take(&mut *lock(&self.nodes.made));
        if let Some((policy, capture)) = self.capture.take() {
            let own = capture.finish();
            let of_nodes: Vec<Finished> = nodes
                .iter_mut()
                .filter_map(|n| n.capture.take())
                .map(Capture::finish)
                .collect();
            self.report_captures(policy.applies(failed), own, of_nodes);
            trace.step("captures stopped");
        }
        if self.keep.is_some_and(|p| p.applies(failed)) {
            self.keep_namespaces(&nodes);
            trace.step("namespaces kept");
        }
        drop(nodes);
        self.go_home();
    }

    /// Keeps the captures and says where they are, or lets them go. The
    /// test's own capture is left out when its namespace carried nothing
    /// and its nodes' captures say it all (a test that only builds a
    /// `Network` uses its own namespace for nothing).
    fn report_captures(&self, keep: bool, own: Finished, of_nodes: Vec<Finished>) {
        let own_is_empty = own.packets == 0 && !of_nodes.is_empty();
        let mut kept = Vec::new();
        for finished in std::iter::once(own).chain(of_nodes) {
            if !keep || (own_is_empty && finished.name() == "test.pcap") {
                finished.discard();
                continue;
            }
            match finished.keep() {
                Ok(path) => kept.push(path),
                Err(error) => eprintln!(
                    "netns-test: cannot keep the packets captured for {}: {error:#}",
                    self.occupant.subject
                ),
            }
        }
        for path in kept {
            eprintln!("netns-test: packets captured in {}", path.display());
        }
    }

    fn report_namespace(&self) {
        if let Ok(id) = sys::thread_ns_id(NsKind::Net) {
            eprintln!(
                "netns-test: {} ran in network namespace net:[{}]",
                self.occupant.subject, id.ino
            );
        }
    }

    fn keep_namespaces(&self, nodes: &[MadeNode]) {
        let own = match NetNs::registered_current() {
            Ok(Some(own)) => own,
            Ok(None) => {
                eprintln!(
                    "netns-test: cannot keep the namespaces of {}: its namespace is not registered",
                    self.occupant.subject
                );
                return;
            }
            Err(error) => {
                eprintln!(
                    "netns-test: cannot keep the namespaces of {}: {error}",
                    self.occupant.subject
                );
                return;
            }
        };
        let veth = self.veth.as_ref().map(|v| v.veth().clone());
        let nodes: Vec<(&str, &NetNs)> = nodes.iter().map(|n| (n.name.as_str(), &n.ns)).collect();
        let what = keep::What {
            name: self.test,
            subject: &self.occupant.subject,
        };
        for result in keep::keep(&what, &own, veth.as_ref(), &nodes) {
            match result {
                Ok(message) => eprintln!("{message}"),
                Err(error) => eprintln!(
                    "netns-test: cannot keep a namespace of {}: {error}",
                    self.occupant.subject
                ),
            }
        }
    }

    /// Leaving the mount namespace fails with EINVAL while threads that the
    /// test spawned still share this thread's filesystem context; the
    /// thread then stays in it, which is harmless for a test harness thread
    /// about to end. Nothing else can fail here.
    fn go_home(&mut self) {
        let Some(home) = self.home.take() else { return };
        if let Err(error) = home.go_back() {
            if error.raw_os_error() != Some(nix::libc::EINVAL) {
                eprintln!(
                    "netns-test: cannot move the test thread back to its namespaces: {error}"
                );
            }
        }
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        self.go_home();
    }
}

/// Prints the seeds of the networks a failed test made, and how to make
/// them again, and what their fault engines did to each impaired direction.
fn report_seeds(seeds: &[u64], faults: &[Faults]) {
    if let Some(line) = seed_line(seeds) {
        eprintln!("{line}");
    }
    for line in faults_lines(seeds.len(), faults) {
        eprintln!("{line}");
    }
}

/// `netns-test: faults a eth0 → b eth0: 2000 packets (..): 612 lost`, a
/// line per impaired direction (naming the network's seed when the test
/// made several networks).
fn faults_lines(networks: usize, faults: &[Faults]) -> Vec<String> {
    let mut lines = Vec::new();
    for (seed, report) in faults {
        for line in report() {
            lines.push(if networks > 1 {
                format!("netns-test: faults (seed {seed:#018x}) {line}")
            } else {
                format!("netns-test: faults {line}")
            });
        }
    }
    lines
}

fn seed_line(seeds: &[u64]) -> Option<String> {
    let hex: Vec<String> = seeds.iter().map(|s| format!("{s:#018x}")).collect();
    match hex.as_slice() {
        [] => None,
        [one] => Some(format!(
            "netns-test: network seed {one}; rerun with NETNS_TEST_SEED={one}"
        )),
        many => Some(format!(
            "netns-test: network seeds {}; rerun with NETNS_TEST_SEED={}",
            many.join(", "),
            many.join(",")
        )),
    }
}

/// Whether the calling thread is the one libtest (or cargo-nextest, which runs
/// libtest) spawned for this test: it carries the test's name, and it ends
/// when the test does, so it need not move back to the host's namespaces.
pub(crate) fn on_own_harness_thread(spec: &TestSpec) -> bool {
    std::thread::current().name() == Some(spec.libtest_name())
}

/// The topology nodes a running test made, for its keep and capture
/// policies.
struct Nodes {
    /// Whether to hold the nodes until the test ends (keep or capture is on).
    hold: bool,
    /// How and where the nodes' captures go, when the test captures.
    capture_dir: Option<(Policy, capture::Location)>,
    made: Mutex<Vec<MadeNode>>,
    /// The seeds of the networks the test made, in order.
    seeds: Mutex<Vec<u64>>,
    /// What the networks' fault engines did, by seed.
    faults: Mutex<Vec<Faults>>,
    /// Why a network's fault engine stopped, when one did.
    failures: Mutex<Vec<String>>,
}

/// A network's seed, and the lines that say what its fault engine did.
type Faults = (u64, Box<dyn Fn() -> Vec<String> + Send + Sync>);

struct MadeNode {
    name: String,
    ns: NetNs,
    capture: Option<Capture>,
}

impl Observer for Nodes {
    fn made(&self, name: &str, ns: &NetNs) -> Result<(), Error> {
        if !self.hold {
            return Ok(());
        }
        let capture = self
            .capture_dir
            .as_ref()
            .map(|(policy, location)| {
                let file = format!("{}.pcap", crate::debug::file_safe(name));
                Capture::start(location, &file, *policy)
            })
            .transpose()?;
        lock(&self.made).push(MadeNode {
            name: name.to_owned(),
            ns: ns.clone(),
            capture,
        });
        Ok(())
    }

    fn network_made(&self, choose: &dyn Fn(usize) -> u64) -> u64 {
        let mut seeds = lock(&self.seeds);
        let seed = choose(seeds.len());
        seeds.push(seed);
        seed
    }

    fn network_failed(&self, why: String) {
        lock(&self.failures).push(why);
    }

    fn faults_made(&self, seed: u64, lines: Box<dyn Fn() -> Vec<String> + Send + Sync>) {
        lock(&self.faults).push((seed, lines));
    }

    fn capture_sink(
        &self,
        ns: &NetNs,
        interface: &str,
        redirect: &str,
    ) -> Option<Arc<dyn crate::netns::FrameSink>> {
        let made = lock(&self.made);
        let node = made.iter().find(|n| n.ns.inode() == ns.inode())?;
        Some(node.capture.as_ref()?.sink(interface, redirect))
    }
}

#[cfg(test)]
mod tests {
    use super::{Faults, faults_lines, seed_line};

    #[test]
    fn the_faults_lines_name_each_direction_and_the_seed_when_several() {
        let faults: Vec<Faults> = vec![
            (
                1,
                Box::new(|| vec!["a eth0 → b eth0: 10 packets (600 bytes): 3 lost".into()]),
            ),
            (2, Box::new(Vec::new)),
        ];
        assert_eq!(
            faults_lines(1, &faults[..1]),
            ["netns-test: faults a eth0 → b eth0: 10 packets (600 bytes): 3 lost"]
        );
        assert_eq!(
            faults_lines(2, &faults),
            [
                "netns-test: faults (seed 0x0000000000000001) a eth0 → b eth0: 10 packets (600 bytes): 3 lost"
            ]
        );
    }

    #[test]
    fn the_seed_line_says_how_to_rerun() {
        assert_eq!(seed_line(&[]), None);
        assert_eq!(
            seed_line(&[0x5eed]).unwrap(),
            "netns-test: network seed 0x0000000000005eed; rerun with NETNS_TEST_SEED=0x0000000000005eed"
        );
        assert_eq!(
            seed_line(&[1, 2]).unwrap(),
            "netns-test: network seeds 0x0000000000000001, 0x0000000000000002; \
             rerun with NETNS_TEST_SEED=0x0000000000000001,0x0000000000000002"
        );
    }
}
