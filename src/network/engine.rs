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

use super::pipeline::{Counters, Pipeline};
use super::prng::Prng;
use crate::error::Error;
use crate::netns::Observer;
use crate::os::packet;
use crate::os::poller::{self, Poller, Timer};
use crate::schedule::Plan;
use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;

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

enum Command {
    Add(DirectionId, Sockets, Plan),
    Plan(DirectionId, Plan),
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
type Report = Vec<(DirectionId, Counters)>;

/// The engine of one network.
pub(super) struct Engine {
    shared: Arc<Shared>,
    /// Whether a test learns when the engine stops on its own (else its
    /// drop says so).
    observed: bool,
    thread: Option<JoinHandle<Option<Report>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
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

    /// Starts carrying a direction's frames through `plan`.
    pub(super) fn add(
        &self,
        operation: &'static str,
        id: DirectionId,
        sockets: Sockets,
        plan: Plan,
    ) -> Result<(), Error> {
        self.alive(operation)?;
        // Added to the poller under the lock, before the command: the
        // engine, told of frames of a direction it does not know, takes
        // the commands and finds it.
        let commands = lock(&self.shared.commands);
        self.shared.poller.add(sockets.steal.as_fd(), id.key())?;
        self.send(commands, Command::Add(id, sockets, plan));
        Ok(())
    }

    /// Replaces a direction's plan, from now on.
    pub(super) fn set_plan(
        &self,
        operation: &'static str,
        id: DirectionId,
        plan: Plan,
    ) -> Result<(), Error> {
        self.alive(operation)?;
        let commands = lock(&self.shared.commands);
        self.send(commands, Command::Plan(id, plan));
        Ok(())
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
    pipeline: Pipeline,
    /// Frames the kernel refused to send (the sending end down, say).
    unsent: u64,
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

/// The engine's loop: take commands, send what is due, wait for frames or
/// the next due time, take frames in. Commands sent before a frame
/// arrived apply to it: they are taken before each frame. Returns each
/// direction's counters when told to stop, or why it cannot go on.
fn run(
    shared: &Shared,
    mut timer: Timer,
    seed: u64,
) -> Result<Vec<(DirectionId, Counters)>, String> {
    let mut directions: Vec<Direction> = Vec::new();
    let mut by_key: HashMap<u64, usize> = HashMap::new();
    let mut received = packet::Received::new(BATCH, FRAME_BYTES);
    let mut out = Vec::new();
    let mut ready = Vec::new();
    let mut most_held = 0usize;
    let ended = loop {
        if shared.stopping() {
            break Ok(());
        }
        take_commands(shared, seed, &mut directions, &mut by_key);
        let now = shared.now();
        let mut next: Option<u64> = None;
        for direction in &mut directions {
            direction.pipeline.due(now, &mut out);
            direction.send(&mut out, shared);
            if let Some(at) = direction.pipeline.next_deadline() {
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
                    if !by_key.contains_key(&key) {
                        take_commands(shared, seed, &mut directions, &mut by_key);
                    }
                    if let Some(&at) = by_key.get(&key) {
                        take_frames(
                            shared,
                            seed,
                            at,
                            &mut directions,
                            &mut by_key,
                            &mut received,
                            &mut out,
                        );
                    }
                }
            }
            if shared.stopping() {
                break;
            }
        }
        let held: usize = directions.iter().map(|d| d.pipeline.held_bytes()).sum();
        most_held = most_held.max(held);
    };
    let counters = directions
        .iter()
        .map(|d| {
            let mut counters = d.pipeline.counters();
            counters.unsent = d.unsent;
            counters.missed = packet::drops(d.sockets.steal.as_fd());
            (d.id, counters)
        })
        .collect();
    // What is still held goes now; a lot of it leaves the allocator with
    // free memory it may keep from the system.
    drop(directions);
    if most_held >= 16 << 20 {
        crate::os::sys::release_free_memory();
    }
    ended.map(|()| counters)
}

/// Takes in the frames waiting on direction `at`'s socket: a few batches,
/// then the other directions get their turn.
fn take_frames(
    shared: &Shared,
    seed: u64,
    at: usize,
    directions: &mut Vec<Direction>,
    by_key: &mut HashMap<u64, usize>,
    received: &mut packet::Received,
    out: &mut Vec<Vec<u8>>,
) {
    let id = directions[at].id;
    for _ in 0..TURN {
        if shared.stopping() {
            return;
        }
        let count = received
            .receive(directions[at].sockets.steal.as_fd())
            .unwrap_or(0);
        for i in 0..count {
            // Commands sent meanwhile apply to the frames after them.
            take_commands(shared, seed, directions, by_key);
            let direction = &mut directions[at];
            direction
                .pipeline
                .arrive(shared.now(), received.frame(i), out);
        }
        let direction = &mut directions[at];
        debug_assert_eq!(direction.id, id);
        direction.send(out, shared);
        if count < received.capacity() {
            return;
        }
    }
}

/// Applies the commands sent so far, if any.
fn take_commands(
    shared: &Shared,
    seed: u64,
    directions: &mut Vec<Direction>,
    by_key: &mut HashMap<u64, usize>,
) {
    if !shared.pending.swap(false, Ordering::SeqCst) {
        return;
    }
    for command in std::mem::take(&mut *lock(&shared.commands)) {
        let now = shared.now();
        match command {
            Command::Add(id, sockets, plan) => {
                let direction = Direction {
                    id,
                    sockets,
                    pipeline: Pipeline::new(Prng::stream(seed, id.link, id.from_end), plan, now),
                    unsent: 0,
                };
                match by_key.get(&id.key()) {
                    Some(&at) => directions[at] = direction,
                    None => {
                        by_key.insert(id.key(), directions.len());
                        directions.push(direction);
                    }
                }
            }
            Command::Plan(id, plan) => {
                if let Some(&at) = by_key.get(&id.key()) {
                    directions[at].pipeline.set_plan(plan, now);
                }
            }
            #[cfg(test)]
            Command::Panic => panic!("an injected bug"),
        }
    }
}

impl Direction {
    /// Sends `out`, in order, and empties it; a frame the kernel refuses
    /// is counted and skipped; when the engine stops, the rest is left.
    fn send(&mut self, out: &mut Vec<Vec<u8>>, shared: &Shared) {
        if !out.is_empty() {
            let (refused, _left) =
                packet::send_all(self.sockets.send.as_fd(), out, || !shared.stopping());
            self.unsent += refused;
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
