//! The fault engine: one thread per [`Network`](super::Network) that
//! carries every impaired direction's frames from the socket that steals
//! them to the socket that sends them on, through each direction's
//! [`Pipeline`], waiting on all of them and on the next due time at once.
//!
//! The thread starts with the first impairment and ends when the network
//! is dropped; its sockets, which hold the nodes' namespaces, close with it.

use super::pipeline::{Counters, Pipeline};
use super::prng::Prng;
use crate::error::Error;
use crate::os::packet;
use crate::schedule::Plan;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The largest frame the engine takes: a 64 KiB IP packet and its header.
const FRAME_BYTES: usize = 65536 + 64;
/// The most frames read at once from one direction.
const BATCH: usize = 64;

/// Identifies a direction: the link's number in its network and which end sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct DirectionId {
    pub link: u32,
    pub from_end: u8,
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
}

struct Shared {
    commands: Mutex<Vec<Command>>,
    wake: OwnedFd,
    /// Commands wait in `commands`.
    pending: AtomicBool,
    stop: AtomicBool,
    start: Instant,
}

/// The engine of one network.
pub(super) struct Engine {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<Vec<(DirectionId, Counters)>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Engine {
    /// Starts the engine's thread.
    pub(super) fn start(seed: u64) -> Result<Engine, Error> {
        let shared = Arc::new(Shared {
            commands: Mutex::new(Vec::new()),
            wake: packet::event()?,
            pending: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            start: Instant::now(),
        });
        let inside = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            // "faults-" and the seed's low 32 bits: 15 bytes, what a thread's
            // name keeps (top -H, /proc/PID/task/TID/comm).
            .name(format!("faults-{:08x}", seed as u32))
            .spawn(move || run(&inside, seed))
            .map_err(|e| Error::new("spawn the fault engine's thread", e))?;
        Ok(Engine {
            shared,
            thread: Some(thread),
        })
    }

    fn send(&self, command: Command) {
        lock(&self.shared.commands).push(command);
        self.shared.pending.store(true, Ordering::SeqCst);
        packet::notify(self.shared.wake.as_fd());
    }

    /// Starts carrying a direction's frames through `plan`.
    pub(super) fn add(&self, id: DirectionId, sockets: Sockets, plan: Plan) {
        self.send(Command::Add(id, sockets, plan));
    }

    /// Replaces a direction's plan, from now on.
    pub(super) fn set_plan(&self, id: DirectionId, plan: Plan) {
        self.send(Command::Plan(id, plan));
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        packet::notify(self.shared.wake.as_fd());
        if let Some(thread) = self.thread.take() {
            if let Ok(counters) = thread.join() {
                if crate::settings::trace() {
                    for (id, c) in counters {
                        eprintln!(
                            "netns-test: faults on link {} from end {}: {c:?}",
                            id.link, id.from_end
                        );
                    }
                }
            }
        }
    }
}

struct Direction {
    id: DirectionId,
    sockets: Sockets,
    pipeline: Pipeline,
    /// Frames the kernel refused to send (the sending end down, say).
    unsent: u64,
}

fn now_ns(shared: &Shared) -> u64 {
    shared.start.elapsed().as_nanos() as u64
}

/// The engine's loop: take commands, send what is due, wait for frames or
/// the next due time, take frames in. Commands sent before a frame
/// arrived apply to it: they are taken before each frame.
fn run(shared: &Shared, seed: u64) -> Vec<(DirectionId, Counters)> {
    let mut directions: Vec<Direction> = Vec::new();
    let mut slots = vec![vec![0u8; FRAME_BYTES]; BATCH];
    let mut lengths = Vec::with_capacity(BATCH);
    let mut out = Vec::new();
    let mut ready = Vec::new();
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            return directions
                .iter()
                .map(|d| {
                    let mut counters = d.pipeline.counters();
                    counters.unsent = d.unsent;
                    counters.missed = packet::drops(d.sockets.steal.as_fd());
                    (d.id, counters)
                })
                .collect();
        }
        take_commands(shared, seed, &mut directions);
        let now = now_ns(shared);
        let mut next: Option<u64> = None;
        for direction in &mut directions {
            direction.pipeline.due(now, &mut out);
            direction.send_all(&mut out);
            if let Some(at) = direction.pipeline.next_deadline() {
                next = Some(next.map_or(at, |n: u64| n.min(at)));
            }
        }
        let timeout = next.map(|at| Duration::from_nanos(at.saturating_sub(now_ns(shared))));
        {
            let mut fds = Vec::with_capacity(directions.len() + 1);
            fds.push(shared.wake.as_fd());
            fds.extend(directions.iter().map(|d| d.sockets.steal.as_fd()));
            packet::wait(&fds, timeout, &mut ready);
        }
        if ready.first() == Some(&true) {
            packet::drain(shared.wake.as_fd());
        }
        let readable: Vec<DirectionId> = directions
            .iter()
            .zip(ready.iter().skip(1))
            .filter(|(_, r)| **r)
            .map(|(d, _)| d.id)
            .collect();
        for id in readable {
            // A few batches, then the other directions get their turn.
            for _ in 0..4 {
                take_commands(shared, seed, &mut directions);
                let Some(at) = directions.iter().position(|d| d.id == id) else {
                    break;
                };
                let received = packet::receive_many(
                    directions[at].sockets.steal.as_fd(),
                    &mut slots,
                    &mut lengths,
                )
                .unwrap_or(0);
                for (slot, length) in slots.iter().zip(&lengths).take(received) {
                    // Commands sent meanwhile apply to the frames after them.
                    take_commands(shared, seed, &mut directions);
                    let Some(direction) = directions.iter_mut().find(|d| d.id == id) else {
                        break;
                    };
                    let frame = slot[..*length].to_vec();
                    direction.pipeline.arrive(now_ns(shared), frame, &mut out);
                }
                if let Some(direction) = directions.iter_mut().find(|d| d.id == id) {
                    direction.send_all(&mut out);
                }
                out.clear();
                if received < BATCH {
                    break;
                }
            }
        }
    }
}

/// Applies the commands sent so far, if any.
fn take_commands(shared: &Shared, seed: u64, directions: &mut Vec<Direction>) {
    if !shared.pending.swap(false, Ordering::SeqCst) {
        return;
    }
    for command in std::mem::take(&mut *lock(&shared.commands)) {
        let now = now_ns(shared);
        match command {
            Command::Add(id, sockets, plan) => {
                let prng = Prng::stream(seed, id.link, id.from_end);
                directions.retain(|d| d.id != id);
                directions.push(Direction {
                    id,
                    sockets,
                    pipeline: Pipeline::new(prng, plan, now),
                    unsent: 0,
                });
            }
            Command::Plan(id, plan) => {
                if let Some(d) = directions.iter_mut().find(|d| d.id == id) {
                    d.pipeline.set_plan(plan, now);
                }
            }
        }
    }
}

impl Direction {
    /// Sends `out`, in order, and empties it; a frame the kernel refuses
    /// is counted and skipped.
    fn send_all(&mut self, out: &mut Vec<Vec<u8>>) {
        let mut rest = &out[..];
        while !rest.is_empty() {
            match packet::send_many(self.sockets.send.as_fd(), rest) {
                Ok(n) if n > 0 => rest = &rest[n..],
                _ => {
                    self.unsent += 1;
                    rest = &rest[1..];
                }
            }
        }
        out.clear();
    }
}
