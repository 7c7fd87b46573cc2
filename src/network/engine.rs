//! The fault engine: one thread per [`Network`](super::Network) that
//! carries every impaired direction's frames from the socket that steals
//! them to the socket that sends them on, through each direction's
//! [`Pipeline`], waiting on all of them and on the next due time at once
//! (an epoll set with a timer in it).
//!
//! The thread starts with the first impairment and ends when the network
//! is dropped; its sockets, which hold the nodes' namespaces, close with it.
//! It checks for the end between any two system calls it makes for frames,
//! and throws away what it still holds, so that dropping a network takes
//! about as long as freeing what it held, however flooded.
//!
//! When the thread cannot go on (its wait fails, or it panics), it says why
//! once: every later change of an impairment fails naming the cause, and
//! the test that made the network fails with it.
//!
//! A direction carries one pipeline per rule (an impairment and those it
//! is `otherwise`): each frame goes to the first rule that takes it, or,
//! when none does, straight on. Each direction's counters are published
//! to a [`Report`] as frames come, for `Link::counters_from` and for the
//! failure report of the test that made the network.

use super::classify::{ENGINE_TAGS, View};
use super::pipeline::{Counters, Fate, MAX_HELD_BYTES, Pipeline};
use super::prng::Prng;
use crate::error::Error;
use crate::impairment::Model;
use crate::netns::{FrameSink, Observer};
use crate::os::packet;
use crate::os::poller::{self, Poller, Timer};
use crate::schedule::Plan;
use crate::sync::lock;
use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

/// The largest frame the engine takes: a 64 KiB IP packet and its header.
const FRAME_BYTES: usize = 65536 + 64;
/// The most frames read at once from one direction.
const BATCH: usize = 64;
/// The most batches read from one direction before the others get a turn.
const TURN: usize = 4;
/// The poller's keys of the engine's own descriptors; a direction's is
/// [`DirectionId::key`], above them.
const WAKE: u64 = 0;
const TIMER: u64 = 1;
/// How long [`Engine::sync`] waits for the engine at most.
const SYNC_WAIT: Duration = Duration::from_secs(1);
/// The most batches a sync reads from one direction (a flood never ends).
const SYNC_BATCHES: usize = 64;

/// Identifies a direction: the link's number in its network and which end sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct DirectionId {
    pub link: u32,
    pub from_end: u8,
}

impl DirectionId {
    fn key(self) -> u64 {
        2 + (u64::from(self.link) << 1 | u64::from(self.from_end))
    }
}

/// A direction's sockets: the one that receives the stolen frames, and
/// the one that sends them out of the sending end.
pub(super) struct Sockets {
    pub steal: OwnedFd,
    pub send: OwnedFd,
}

/// One impaired direction's counters, as the engine last published them,
/// and its name for people: `a eth0 → b eth1`.
pub(super) struct Report {
    pub(super) label: String,
    counters: Mutex<Counters>,
}

impl Report {
    pub(super) fn new(label: String) -> Arc<Report> {
        Arc::new(Report {
            label,
            counters: Mutex::default(),
        })
    }

    pub(super) fn counters(&self) -> Counters {
        *lock(&self.counters)
    }
}

/// What a direction starts with: its sockets, plans, report, and the
/// capture of its sending node, when the test captures it.
pub(super) struct Start {
    pub sockets: Sockets,
    pub plans: Vec<Plan>,
    pub report: Arc<Report>,
    pub capture: Option<Arc<dyn FrameSink>>,
}

enum Command {
    Add(DirectionId, Start),
    Plan(DirectionId, Vec<Plan>),
    /// Read what the sockets hold, publish every direction's counters,
    /// then say so.
    Sync(mpsc::Sender<()>),
    /// A bug, as a test makes one.
    #[cfg(test)]
    Panic,
}

struct Shared {
    commands: Mutex<Vec<Command>>,
    poller: Poller,
    wake: OwnedFd,
    /// Commands wait in `commands`.
    pending: AtomicBool,
    stop: AtomicBool,
    /// Why the engine stopped on its own, once it has.
    failure: OnceLock<String>,
    /// The monotonic clock at the start: the engine's time 0.
    base: u64,
}

/// Each direction's counters, when the engine ended as told.
type Ended = Vec<(DirectionId, Counters)>;

/// The engine of one network.
pub(super) struct Engine {
    shared: Arc<Shared>,
    /// Every direction's report, in the order they were added.
    reports: Arc<Mutex<Vec<Arc<Report>>>>,
    /// Whether a test learns when the engine stops on its own (else its
    /// drop says so).
    observed: bool,
    thread: Option<JoinHandle<Option<Ended>>>,
}

impl Engine {
    /// Starts the engine's thread. `observer`, the test that made the
    /// network, if any, learns when the engine stops on its own.
    pub(super) fn start(seed: u64, observer: Option<Arc<dyn Observer>>) -> Result<Engine, Error> {
        let poller = Poller::new()?;
        let wake = poller::event()?;
        let timer = Timer::new()?;
        poller.add(wake.as_fd(), WAKE)?;
        poller.add(timer.as_fd(), TIMER)?;
        let shared = Arc::new(Shared {
            commands: Mutex::new(Vec::new()),
            poller,
            wake,
            pending: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            failure: OnceLock::new(),
            base: poller::monotonic_ns(),
        });
        let inside = Arc::clone(&shared);
        let observed = observer.is_some();
        let reports: Arc<Mutex<Vec<Arc<Report>>>> = Arc::default();
        if let Some(observer) = &observer {
            let reports = Arc::clone(&reports);
            observer.faults_made(
                seed,
                Box::new(move || {
                    lock(&reports)
                        .iter()
                        .map(|r| format!("{}: {}", r.label, r.counters().public()))
                        .collect()
                }),
            );
        }
        let thread = std::thread::Builder::new()
            // "faults-" and the seed's low 32 bits: 15 bytes, what a thread's
            // name keeps (top -H, /proc/PID/task/TID/comm).
            .name(format!("faults-{:08x}", seed as u32))
            .spawn(move || {
                let ended = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    run(&inside, timer, seed)
                }))
                .unwrap_or_else(|panic| Err(format!("it panicked: {}", panic_text(&*panic))));
                match ended {
                    Ok(counters) => Some(counters),
                    Err(why) => {
                        let why = format!(
                            "the fault engine of the network with seed {seed:#018x} stopped: {why}; \
                             its impaired links carried nothing from then on"
                        );
                        let _ = inside.failure.set(why.clone());
                        if let Some(observer) = observer {
                            observer.network_failed(why);
                        }
                        None
                    }
                }
            })
            .map_err(|e| Error::new("spawn the fault engine's thread", e))?;
        Ok(Engine {
            shared,
            reports,
            observed,
            thread: Some(thread),
        })
    }

    /// An error naming why the engine stopped, once it has.
    fn alive(&self, operation: &'static str) -> Result<(), Error> {
        match self.shared.failure.get() {
            None => Ok(()),
            Some(why) => Err(Error::detected(
                operation,
                std::io::ErrorKind::BrokenPipe,
                why.clone(),
            )),
        }
    }

    fn send(&self, mut commands: MutexGuard<'_, Vec<Command>>, command: Command) {
        commands.push(command);
        drop(commands);
        self.shared.pending.store(true, Ordering::SeqCst);
        poller::notify(self.shared.wake.as_fd());
    }

    /// Starts carrying a direction's frames through its plans (one per
    /// rule), publishing its counters to its report.
    pub(super) fn add(
        &self,
        operation: &'static str,
        id: DirectionId,
        start: Start,
    ) -> Result<(), Error> {
        self.alive(operation)?;
        // Added to the poller under the lock, before the command: the
        // engine, told of frames of a direction it does not know, takes
        // the commands and finds it.
        let commands = lock(&self.shared.commands);
        self.shared
            .poller
            .add(start.sockets.steal.as_fd(), id.key())?;
        lock(&self.reports).push(Arc::clone(&start.report));
        self.send(commands, Command::Add(id, start));
        Ok(())
    }

    /// Replaces a direction's plans, from now on.
    pub(super) fn set_plans(
        &self,
        operation: &'static str,
        id: DirectionId,
        plans: Vec<Plan>,
    ) -> Result<(), Error> {
        self.alive(operation)?;
        let commands = lock(&self.shared.commands);
        self.send(commands, Command::Plan(id, plans));
        Ok(())
    }

    /// Waits (up to a second) until the engine has taken what its sockets
    /// hold and published every direction's counters: a count read after
    /// this covers the frames sent before it.
    pub(super) fn sync(&self) {
        if self.shared.failure.get().is_some() {
            return;
        }
        let (done, wait) = mpsc::channel();
        let commands = lock(&self.shared.commands);
        self.send(commands, Command::Sync(done));
        let _ = wait.recv_timeout(SYNC_WAIT);
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        poller::notify(self.shared.wake.as_fd());
        let Some(thread) = self.thread.take() else {
            return;
        };
        match thread.join() {
            Ok(Some(counters)) if crate::settings::trace() => {
                for (id, c) in counters {
                    eprintln!(
                        "netns-test: faults on link {} from end {}: {c:?}",
                        id.link, id.from_end
                    );
                }
            }
            Ok(None) if !self.observed => {
                // No test to fail: said here.
                if let Some(why) = self.shared.failure.get() {
                    eprintln!("netns-test: {why}");
                }
            }
            _ => {}
        }
    }
}

/// A panic's payload, as text.
fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "Box<dyn Any>".to_owned()
    }
}

struct Direction {
    id: DirectionId,
    sockets: Sockets,
    /// One pipeline per rule, in order: the first that takes a frame has it.
    rules: Vec<Pipeline>,
    /// Frames the kernel refused to send on (the sending end down, say).
    unsent: u64,
    /// Frames the kernel dropped before the engine read them.
    missed: u64,
    report: Arc<Report>,
    /// Counts changed since they were last published.
    dirty: bool,
    /// The sending node's capture, when the test captures it.
    capture: Option<Arc<dyn FrameSink>>,
}

impl Shared {
    /// The engine's time: nanoseconds since it started.
    fn now(&self) -> u64 {
        poller::monotonic_ns().saturating_sub(self.base)
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// What the engine's thread holds.
struct State {
    seed: u64,
    directions: Vec<Direction>,
    by_key: HashMap<u64, usize>,
    /// Syncs asked for and not answered yet.
    syncs: Vec<mpsc::Sender<()>>,
}

/// The engine's loop: take commands, send what is due, wait for frames or
/// the next due time, take frames in. Commands sent before a frame
/// arrived apply to it: they are taken before each frame. Returns each
/// direction's counters when told to stop, or why it cannot go on.
fn run(
    shared: &Shared,
    mut timer: Timer,
    seed: u64,
) -> Result<Vec<(DirectionId, Counters)>, String> {
    let mut state = State {
        seed,
        directions: Vec::new(),
        by_key: HashMap::new(),
        syncs: Vec::new(),
    };
    let mut received = packet::Received::new(BATCH, FRAME_BYTES);
    let mut out = Vec::new();
    let mut ready = Vec::new();
    let mut most_held = 0usize;
    let ended = loop {
        if shared.stopping() {
            break Ok(());
        }
        take_commands(shared, &mut state);
        let now = shared.now();
        let mut next: Option<u64> = None;
        for direction in &mut state.directions {
            direction.due(now, &mut out);
            direction.send(&mut out, shared);
            if let Some(at) = direction.next_deadline() {
                next = Some(next.map_or(at, |n: u64| n.min(at)));
            }
        }
        if shared.stopping() {
            break Ok(());
        }
        if let Err(error) = timer.set(next.map(|at| shared.base.saturating_add(at))) {
            break Err(format!(
                "it could not set its timer (timerfd_settime): {error}"
            ));
        }
        ready.clear();
        if let Err(error) = shared.poller.wait(&mut ready) {
            break Err(format!(
                "it could not wait for frames (epoll_wait): {error}"
            ));
        }
        for &key in &ready {
            match key {
                WAKE => poller::drain(shared.wake.as_fd()),
                TIMER => timer.clear(),
                key => {
                    if !state.by_key.contains_key(&key) {
                        take_commands(shared, &mut state);
                    }
                    if let Some(&at) = state.by_key.get(&key) {
                        take_frames(shared, at, TURN, &mut state, &mut received, &mut out);
                    }
                }
            }
            if shared.stopping() {
                break;
            }
        }
        take_commands(shared, &mut state);
        if !state.syncs.is_empty() {
            // What the sockets hold now was sent before the sync.
            for at in 0..state.directions.len() {
                take_frames(
                    shared,
                    at,
                    SYNC_BATCHES,
                    &mut state,
                    &mut received,
                    &mut out,
                );
            }
            for direction in &mut state.directions {
                direction.dirty = true;
            }
        }
        for direction in &mut state.directions {
            direction.publish();
        }
        for done in state.syncs.drain(..) {
            let _ = done.send(());
        }
        let held: usize = state.directions.iter().map(|d| d.held_bytes()).sum();
        most_held = most_held.max(held);
    };
    let counters = state
        .directions
        .iter_mut()
        .map(|d| {
            d.dirty = true;
            d.publish();
            (d.id, d.counters())
        })
        .collect();
    // What is still held goes now; a lot of it leaves the allocator with
    // free memory it may keep from the system.
    drop(state);
    if most_held >= 16 << 20 {
        crate::os::sys::release_free_memory();
    }
    ended.map(|()| counters)
}

/// Takes in the frames waiting on direction `at`'s socket: up to
/// `batches` batches, then the other directions get their turn.
fn take_frames(
    shared: &Shared,
    at: usize,
    batches: usize,
    state: &mut State,
    received: &mut packet::Received,
    out: &mut Vec<Vec<u8>>,
) {
    let id = state.directions[at].id;
    for _ in 0..batches {
        if shared.stopping() {
            return;
        }
        let count = received
            .receive(state.directions[at].sockets.steal.as_fd())
            .unwrap_or(0);
        for i in 0..count {
            // Commands sent meanwhile apply to the frames after them.
            take_commands(shared, state);
            let direction = &mut state.directions[at];
            direction.arrive(shared.now(), received.frame(i), out);
        }
        let direction = &mut state.directions[at];
        debug_assert_eq!(direction.id, id);
        direction.send(out, shared);
        if count < received.capacity() {
            return;
        }
    }
}

/// Applies the commands sent so far, if any.
fn take_commands(shared: &Shared, state: &mut State) {
    if !shared.pending.swap(false, Ordering::SeqCst) {
        return;
    }
    for command in std::mem::take(&mut *lock(&shared.commands)) {
        let now = shared.now();
        match command {
            Command::Add(id, start) => {
                let mut direction = Direction {
                    id,
                    sockets: start.sockets,
                    rules: Vec::new(),
                    unsent: 0,
                    missed: 0,
                    report: start.report,
                    dirty: true,
                    capture: start.capture,
                };
                direction.set_plans(state.seed, start.plans, now);
                match state.by_key.get(&id.key()) {
                    Some(&at) => state.directions[at] = direction,
                    None => {
                        state.by_key.insert(id.key(), state.directions.len());
                        state.directions.push(direction);
                    }
                }
            }
            Command::Plan(id, plans) => {
                if let Some(&at) = state.by_key.get(&id.key()) {
                    state.directions[at].set_plans(state.seed, plans, now);
                }
            }
            Command::Sync(done) => state.syncs.push(done),
            #[cfg(test)]
            Command::Panic => panic!("an injected bug"),
        }
    }
}

impl Direction {
    /// Follows `plans` from `now`, rule by rule. A rule that goes keeps
    /// its pipeline, taking nothing, so that what it holds still leaves
    /// and its generator goes on where it was if the rule comes back.
    fn set_plans(&mut self, seed: u64, plans: Vec<Plan>, now: u64) {
        let count = plans.len();
        let mut plans = plans.into_iter();
        for k in 0..count.max(self.rules.len()) {
            let plan = plans
                .next()
                .unwrap_or_else(|| Plan::constant(Model::default()));
            match self.rules.get_mut(k) {
                Some(rule) => rule.set_plan(plan, now),
                None => {
                    let prng = Prng::stream(seed, self.id.link, self.id.from_end, k as u16);
                    self.rules.push(Pipeline::new(prng, plan, now));
                }
            }
        }
        self.dirty = true;
    }

    /// A frame arrives: the first rule that takes it has it, else it goes
    /// straight on.
    fn arrive(&mut self, now: u64, frame: Vec<u8>, out: &mut Vec<Vec<u8>>) {
        self.dirty = true;
        let mut view: Option<Option<View>> = None;
        let taker = self.rules.iter_mut().position(|rule| {
            rule.advance(now);
            let seen = if rule.selects() {
                *view.get_or_insert_with(|| View::parse(&frame, ENGINE_TAGS))
            } else {
                None
            };
            rule.claims(seen.as_ref())
        });
        let Some(k) = taker else {
            if let Some(capture) = &self.capture {
                capture.frame(&frame, None);
            }
            out.push(frame);
            return;
        };
        // A rule takes the frame: its capture shows it as it was sent.
        let as_sent = self.capture.as_ref().map(|_| frame.clone());
        if self.rules.len() > 1 {
            // The direction's memory is shared by its rules.
            let others: usize = self.held_bytes() - self.rules[k].held_bytes();
            self.rules[k].set_room(MAX_HELD_BYTES.saturating_sub(others));
        }
        let fate = self.rules[k].arrive(now, frame, out);
        if let (Some(capture), Some(as_sent)) = (&self.capture, as_sent) {
            let comment = fate.touched().then(|| self.comment(k, &fate));
            capture.frame(&as_sent, comment);
        }
    }

    /// What a capture says of a frame rule `k` did `fate` to:
    /// `netns-test: lost (loss); rule 2 (udp port 53); packet 17`.
    fn comment(&self, k: usize, fate: &Fate) -> String {
        let mut text = format!("netns-test: {}", fate.words());
        let rule = &self.rules[k];
        if self.rules.len() > 1 || rule.selects() {
            text.push_str(&format!("; rule {} ({})", k + 1, rule.traffic()));
        }
        match fate.packet {
            Some(n) => text.push_str(&format!("; packet {n}")),
            None => text.push_str("; the link's upkeep"),
        }
        text
    }

    /// Appends the frames due by `now`, rule by rule.
    fn due(&mut self, now: u64, out: &mut Vec<Vec<u8>>) {
        for rule in &mut self.rules {
            rule.due(now, out);
        }
    }

    fn next_deadline(&self) -> Option<u64> {
        self.rules.iter().filter_map(Pipeline::next_deadline).min()
    }

    fn held_bytes(&self) -> usize {
        self.rules.iter().map(Pipeline::held_bytes).sum()
    }

    /// The rules' counts together, and the direction's own.
    fn counters(&self) -> Counters {
        let mut counters = Counters::default();
        for rule in &self.rules {
            counters.add(&rule.counters());
        }
        counters.unsent = self.unsent;
        counters.missed = self.missed;
        counters
    }

    /// Publishes the counters to the direction's report, when they changed.
    fn publish(&mut self) {
        if !self.dirty {
            return;
        }
        self.dirty = false;
        self.missed += packet::drops(self.sockets.steal.as_fd());
        *lock(&self.report.counters) = self.counters();
    }

    /// Sends `out`, in order, and empties it; a frame the kernel refuses
    /// is counted and skipped; when the engine stops, the rest is left.
    fn send(&mut self, out: &mut Vec<Vec<u8>>, shared: &Shared) {
        if !out.is_empty() {
            let (refused, _left) =
                packet::send_all(self.sockets.send.as_fd(), out, || !shared.stopping());
            if refused > 0 {
                self.unsent += refused;
                self.dirty = true;
            }
        }
        out.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Impairment;

    #[test]
    fn after_a_panic_of_the_engine_every_change_fails_naming_it() {
        if !crate::privileged() {
            return; // a network outside a test needs root
        }
        let net = crate::Network::with_seed(0x9a);
        let a = net.node("a").unwrap();
        let b = net.node("b").unwrap();
        let link = net.link(&a, &b).unwrap();
        link.impair(Impairment::new().loss(1.0)).unwrap();
        let engine = net.inner.engine().unwrap();
        let commands = lock(&engine.shared.commands);
        engine.send(commands, Command::Panic);
        let mut error = None;
        for _ in 0..100 {
            std::thread::sleep(std::time::Duration::from_millis(10));
            if let Err(e) = link.impair(Impairment::new().loss(2.0)) {
                error = Some(e);
                break;
            }
        }
        let error = error.expect("impair still works after the engine died");
        let text = error.to_string();
        assert!(text.contains("it panicked: an injected bug"), "{text}");
        assert!(
            text.starts_with("impair failed: the fault engine"),
            "{text}"
        );
        assert!(link.schedule(crate::Schedule::new()).is_err());
    }
}
