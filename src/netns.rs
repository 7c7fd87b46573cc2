//! [`NetNs`]: a handle to a network namespace (and the private mount namespace
//! that goes with it), held by file descriptors.

use crate::error::Error;
use crate::os::sys::{self, NsId, NsKind};
use crate::veth::Veth;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fmt;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::process::CommandExt;
#[cfg(feature = "tokio")]
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::thread::JoinHandle;

/// A network namespace with `lo` up, its own view of `/sys` and its own
/// `/etc/hosts`.
///
/// Inside a `#[netns_test]`, [`NetNs::current`] returns the test's namespace.
/// [`NetNs::new`] makes one without a test harness. The handle is cheap to
/// clone and can be sent to any thread; the namespace lives while a handle,
/// a thread or a process is in it.
///
/// ```
/// # if !netns_test::privileged() { return Ok(()); }
/// use netns_test::NetNs;
///
/// let ns = NetNs::new()?;
/// // Port 80 on 127.0.0.1 of this namespace, whatever the host has there.
/// let port = ns.run(|| {
///     let listener = std::net::TcpListener::bind("127.0.0.1:80").unwrap();
///     listener.local_addr().unwrap().port()
/// });
/// assert_eq!(port, 80);
/// # Ok::<(), netns_test::Error>(())
/// ```
#[derive(Clone)]
pub struct NetNs {
    inner: Arc<Inner>,
}

struct Inner {
    net: OwnedFd,
    mnt: OwnedFd,
    id: NsId,
    /// Whether this handle's life is the registration's: true for
    /// [`NetNs::new`]; a test's registration lives as long as the test.
    owns_registration: bool,
    veth: Option<Veth>,
    /// The runtime of [`NetNs::spawn_async`], started on first use. A
    /// panic cannot leave it half made, so handles stay unwind-safe.
    #[cfg(feature = "tokio")]
    runtime: AssertUnwindSafe<OnceLock<RuntimeThread>>,
}

/// A current-thread tokio runtime driven by a thread inside the namespace,
/// until this is dropped.
#[cfg(feature = "tokio")]
struct RuntimeThread {
    handle: tokio::runtime::Handle,
    stop: Arc<Stop>,
}

/// Whether a [`RuntimeThread`] is to stop, and the waker of the future
/// that its thread blocks on until then.
#[cfg(feature = "tokio")]
#[derive(Default)]
struct Stop {
    waker: Mutex<(bool, Option<std::task::Waker>)>,
}

#[cfg(feature = "tokio")]
impl Stop {
    fn lock(&self) -> std::sync::MutexGuard<'_, (bool, Option<std::task::Waker>)> {
        self.waker.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Resolves once [`RuntimeThread`] is dropped.
    async fn stopped(&self) {
        std::future::poll_fn(|cx| {
            let mut state = self.lock();
            if state.0 {
                std::task::Poll::Ready(())
            } else {
                state.1 = Some(cx.waker().clone());
                std::task::Poll::Pending
            }
        })
        .await
    }
}

#[cfg(feature = "tokio")]
impl Drop for RuntimeThread {
    fn drop(&mut self) {
        let waker = {
            let mut state = self.stop.lock();
            state.0 = true;
            state.1.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// A namespace netns-test made, as the registry knows it.
struct Registered {
    /// The handle, once a thread asked for it.
    handle: Weak<Inner>,
    veth: Option<Veth>,
    /// The running test whose namespace this is, told of the namespaces made
    /// from it.
    observer: Option<Arc<dyn Observer>>,
}

/// What a running test wants to know about the namespaces made while it
/// runs (a [`Network`](crate::Network)'s nodes): its keep and capture
/// policies cover them too.
pub(crate) trait Observer: Send + Sync {
    /// `ns`, named `name`, was made from the test's namespace. Called on the
    /// new namespace's setup thread, which is inside it.
    fn made(&self, name: &str, ns: &NetNs) -> Result<(), Error>;

    /// A [`Network`](crate::Network) is being made: returns its seed,
    /// `choose(k)` for the test's `k`-th network (from 0), and remembers it
    /// to print when the test fails.
    fn network_made(&self, choose: &dyn Fn(usize) -> u64) -> u64;

    /// A network's fault engine stopped on its own, for the reason `why`:
    /// the test fails, saying so, even when its body passed.
    fn network_failed(&self, why: String);

    /// The fault engine of the network with `seed` started: `lines()`
    /// says what it did to each impaired direction (`a eth0 → b eth0:
    /// 2000 packets ...`), printed under the seed when the test fails.
    fn faults_made(&self, seed: u64, lines: Box<dyn Fn() -> Vec<String> + Send + Sync>);

    /// Where the fault engine records the frames `interface` of `ns`
    /// sends through it, with what it did to each, when the test captures
    /// `ns`; the capture then leaves out what the kernel shows of those
    /// frames on `redirect`, where the engine takes them.
    fn capture_sink(
        &self,
        ns: &NetNs,
        interface: &str,
        redirect: &str,
    ) -> Option<Arc<dyn FrameSink>>;
}

/// A capture that the fault engine hands the frames it takes.
pub(crate) trait FrameSink: Send + Sync {
    /// A frame the interface sent, as it sent it, and what the engine did
    /// to it (`None`: nothing). Never waits: a capture that cannot keep up
    /// loses the frame.
    fn frame(&self, frame: &[u8], comment: Option<String>);
}

/// The observer of the test whose namespace the calling thread is in, if any.
pub(crate) fn current_observer() -> Option<Arc<dyn Observer>> {
    let id = sys::thread_ns_id(NsKind::Net).ok()?;
    lock_registry().get(&id)?.observer.clone()
}

/// The namespaces netns-test made and that are still in use, by the identity
/// of their network namespace, so that any thread inside one can find it.
/// The handle is made on first use: a test that never asks for it opens no
/// file descriptors.
fn lock_registry() -> std::sync::MutexGuard<'static, HashMap<NsId, Registered>> {
    static REGISTRY: OnceLock<Mutex<HashMap<NsId, Registered>>> = OnceLock::new();
    REGISTRY
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Drop for Inner {
    fn drop(&mut self) {
        if self.owns_registration {
            lock_registry().remove(&self.id);
        }
    }
}

/// Keeps the calling thread's fresh namespace known to [`NetNs::current`]
/// until dropped.
pub(crate) struct Registration {
    id: NsId,
}

impl Registration {
    /// Registers the test's network namespace `id` (the calling thread's)
    /// and its veth pair.
    pub(crate) fn new(id: NsId, veth: Option<Veth>, observer: Arc<dyn Observer>) -> Registration {
        let handle = Weak::new();
        let observer = Some(observer);
        lock_registry().insert(
            id,
            Registered {
                handle,
                veth,
                observer,
            },
        );
        Registration { id }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        lock_registry().remove(&self.id);
    }
}

impl NetNs {
    /// Creates a new namespace, without entering it on this thread.
    ///
    /// The namespace is set up on a short-lived thread and then held by file
    /// descriptors: `lo` is up, `/sys` and `/etc/hosts` are its own, IPv6
    /// duplicate address detection is off. It needs CAP_SYS_ADMIN; the error
    /// says what is missing.
    pub fn new() -> Result<NetNs, Error> {
        NetNs::new_with(|_| Ok(())).map(|(ns, ())| ns)
    }

    /// [`NetNs::new`], also running `inside` on the new namespace's setup
    /// thread (to open a netlink socket there, say).
    pub(crate) fn new_with<T: Send>(
        inside: impl FnOnce(&NetNs) -> Result<T, Error> + Send,
    ) -> Result<(NetNs, T), Error> {
        std::thread::scope(|scope| {
            std::thread::Builder::new()
                .name("netns-test-new".into())
                .spawn_scoped(scope, || {
                    crate::os::isolation::isolate_this_thread()?;
                    let ns = NetNs::open_this_thread(true, None)?;
                    let handle = Arc::downgrade(&ns.inner);
                    lock_registry().insert(
                        ns.inner.id,
                        Registered {
                            handle,
                            veth: None,
                            observer: None,
                        },
                    );
                    let made = inside(&ns)?;
                    Ok((ns, made))
                })
                .map_err(|e| Error::new("spawn a thread for a new namespace", e))?
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// Runs `future` to completion on a new thread inside this namespace, on a
    /// current-thread tokio runtime built there (so its sockets are inside).
    /// Each call starts a thread and a runtime (about 0.1 ms); the future
    /// may borrow from the caller. From async code, prefer
    /// [`NetNs::spawn_async`] and `.await` its handle.
    ///
    /// ```
    /// # if !netns_test::privileged() { return; }
    /// let ns = netns_test::NetNs::new().unwrap();
    /// let port = ns.block_on(async {
    ///     let listener = tokio::net::TcpListener::bind("127.0.0.1:80").await.unwrap();
    ///     listener.local_addr().unwrap().port()
    /// });
    /// assert_eq!(port, 80);
    /// ```
    #[cfg(feature = "tokio")]
    pub fn block_on<F>(&self, future: F) -> F::Output
    where
        F: std::future::Future + Send,
        F::Output: Send,
    {
        self.run(|| current_thread_runtime().block_on(future))
    }

    /// Needs the `tokio` feature (a default feature), which is off: a
    /// call does not compile, and the error says so.
    #[cfg(not(feature = "tokio"))]
    pub fn block_on<F>(&self, _future: F) -> F::Output
    where
        F: std::future::Future + Send + crate::contract::BlockOnNeedsTokio,
        F::Output: Send,
    {
        unreachable!("no type implements BlockOnNeedsTokio")
    }

    /// Spawns `future` as a tokio task inside this namespace and returns its
    /// [`tokio::task::JoinHandle`], to `.await` from any runtime (or to
    /// `abort`).
    ///
    /// The namespace has one runtime for this, a current-thread runtime
    /// driven by a thread inside it, started on the first call and stopped
    /// (its tasks cancelled) when the last handle to the namespace is
    /// dropped.
    ///
    /// ```
    /// # if !netns_test::privileged() { return; }
    /// let ns = netns_test::NetNs::new().unwrap();
    /// let server = ns.spawn_async(async {
    ///     let listener = tokio::net::TcpListener::bind("127.0.0.1:80").await.unwrap();
    ///     listener.local_addr().unwrap().port()
    /// });
    /// let port = tokio::runtime::Runtime::new().unwrap().block_on(server).unwrap();
    /// assert_eq!(port, 80);
    /// ```
    #[cfg(feature = "tokio")]
    pub fn spawn_async<F>(&self, future: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.inner
            .runtime
            .get_or_init(|| self.start_runtime_thread())
            .handle
            .spawn(future)
    }

    /// Needs the `tokio` feature (a default feature), which is off: a
    /// call does not compile, and the error says so.
    #[cfg(not(feature = "tokio"))]
    pub fn spawn_async<F>(&self, _future: F) -> std::future::Pending<F::Output>
    where
        F: std::future::Future + Send + 'static + crate::contract::SpawnAsyncNeedsTokio,
        F::Output: Send + 'static,
    {
        unreachable!("no type implements SpawnAsyncNeedsTokio")
    }

    #[cfg(feature = "tokio")]
    fn start_runtime_thread(&self) -> RuntimeThread {
        let stop = Arc::new(Stop::default());
        let stopped = stop.clone();
        let (sender, receiver) = std::sync::mpsc::sync_channel(1);
        let entry = self.entry();
        std::thread::Builder::new()
            .name(format!("netns-{}-tokio", self.inner.id.ino))
            .spawn(move || {
                entry.enter_this_thread();
                drop(entry);
                let runtime = current_thread_runtime();
                let _ = sender.send(runtime.handle().clone());
                runtime.block_on(stopped.stopped());
            })
            .expect("netns-test: cannot spawn a thread");
        let handle = receiver
            .recv()
            .expect("netns-test: the runtime thread of a namespace ended at its start");
        RuntimeThread { handle, stop }
    }

    /// The namespace of the calling thread, when netns-test made it.
    ///
    /// Works on the test thread, on threads it spawned, on tokio workers and
    /// blocking threads, and on threads started by [`NetNs::run`] or
    /// [`NetNs::spawn`].
    ///
    /// # Panics
    /// When the calling thread is in a namespace that netns-test did not make
    /// (outside a `#[netns_test]`, for example). [`NetNs::try_current`]
    /// returns `None` instead.
    #[track_caller]
    pub fn current() -> NetNs {
        match NetNs::try_current() {
            Some(ns) => ns,
            None => {
                let here = sys::thread_ns_id(NsKind::Net)
                    .map(|id| format!("net:[{}]", id.ino))
                    .unwrap_or_else(|e| format!("unknown ({e})"));
                panic!(
                    "NetNs::current() called on a thread in network namespace {here}, which netns-test did not create: \
                     call it from a #[netns_test] body or from a thread, tokio task or NetNs::run closure started there"
                )
            }
        }
    }

    /// The namespace of the calling thread, or `None` when netns-test did not make it.
    pub fn try_current() -> Option<NetNs> {
        NetNs::registered_current().ok().flatten()
    }

    /// [`NetNs::try_current`], with the error when the namespace is
    /// netns-test's but its files cannot be opened (out of descriptors, say).
    pub(crate) fn registered_current() -> Result<Option<NetNs>, Error> {
        let id = sys::thread_ns_id(NsKind::Net)?;
        let mut map = lock_registry();
        let Some(registered) = map.get_mut(&id) else {
            return Ok(None);
        };
        if let Some(inner) = registered.handle.upgrade() {
            return Ok(Some(NetNs { inner }));
        }
        // Registered by a test that has not asked for its handle yet: this
        // thread is inside, so it can open the namespace files.
        let ns = NetNs::open_this_thread(false, registered.veth.clone())?;
        if ns.inner.id != id {
            return Ok(None);
        }
        registered.handle = Arc::downgrade(&ns.inner);
        Ok(Some(ns))
    }

    /// A handle to the calling thread's namespaces, held by new file descriptors.
    fn open_this_thread(owns_registration: bool, veth: Option<Veth>) -> Result<NetNs, Error> {
        NetNs::open(
            Path::new("/proc/thread-self/ns/net"),
            Path::new("/proc/thread-self/ns/mnt"),
            owns_registration,
            veth,
        )
    }

    fn open(
        net: &Path,
        mnt: &Path,
        owns_registration: bool,
        veth: Option<Veth>,
    ) -> Result<NetNs, Error> {
        let net = sys::open_ns(net)?;
        let mnt = sys::open_ns(mnt)?;
        let id = sys::ns_id(net.as_fd())?;
        Ok(NetNs {
            inner: Arc::new(Inner {
                net,
                mnt,
                id,
                owns_registration,
                veth,
                #[cfg(feature = "tokio")]
                runtime: AssertUnwindSafe(OnceLock::new()),
            }),
        })
    }

    /// The host: the network and mount namespaces of this process's main
    /// thread, where tests start from. Available in every test, with the same
    /// `run`, `spawn` and `command` as a test's namespace. In rootless mode
    /// the host's namespaces belong to the real root: entering them fails.
    ///
    /// ```
    /// # if !netns_test::privileged() { return; }
    /// let ns = netns_test::NetNs::new().unwrap();
    /// let host = ns.host();
    /// assert_ne!(host, ns);
    /// let outside = ns.run(|| netns_test::NetNs::current().host());
    /// assert_eq!(outside, host);
    /// ```
    pub fn host(&self) -> NetNs {
        static HOST: OnceLock<NetNs> = OnceLock::new();
        HOST.get_or_init(|| {
            NetNs::open(
                Path::new("/proc/self/ns/net"),
                Path::new("/proc/self/ns/mnt"),
                false,
                None,
            )
            .unwrap_or_else(|e| panic!("netns-test: cannot open the host's namespaces: {e}"))
        })
        .clone()
    }

    /// The veth pair to the host, for a `#[netns_test(veth)]` test.
    pub fn veth(&self) -> Option<&Veth> {
        self.inner.veth.as_ref()
    }

    /// Runs `f` on a new thread inside this namespace and returns its result.
    ///
    /// The thread is in this namespace's network and mount namespaces, in
    /// the caller's working directory. A panic in `f` is resumed here.
    pub fn run<F, T>(&self, f: F) -> T
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        let entry = self.entry();
        std::thread::scope(|scope| {
            std::thread::Builder::new()
                .name(format!("netns-{}", self.inner.id.ino))
                .spawn_scoped(scope, move || {
                    entry.enter_this_thread();
                    f()
                })
                .expect("netns-test: cannot spawn a thread")
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// Starts `f` on a new thread inside this namespace, like [`NetNs::run`]
    /// without waiting for it.
    pub fn spawn<F, T>(&self, f: F) -> JoinHandle<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let entry = self.entry();
        std::thread::Builder::new()
            .name(format!("netns-{}", self.inner.id.ino))
            .spawn(move || {
                entry.enter_this_thread();
                f()
            })
            .expect("netns-test: cannot spawn a thread")
    }

    fn entry(&self) -> Entry {
        Entry {
            ns: self.clone(),
            cwd: std::env::current_dir().ok(),
        }
    }

    /// A [`Command`] whose child process starts in this namespace (network
    /// and mounts) and in the working directory of the thread that spawns
    /// it. It can be spawned from any thread.
    ///
    /// ```
    /// # if !netns_test::privileged() { return Ok(()); }
    /// let ns = netns_test::NetNs::new()?;
    /// let out = ns.command("cat").arg("/proc/net/dev").output()?;
    /// let devices = String::from_utf8_lossy(&out.stdout);
    /// assert!(devices.contains("lo:"));
    /// assert!(!devices.contains("eth0:"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new(program);
        let inner = Arc::clone(&self.inner);
        let mut cwd_buffer = vec![0u8; 4096];
        // SAFETY: the hook only makes system calls (getcwd, setns, chdir) into
        // memory allocated before the fork; it does not allocate or lock.
        unsafe {
            command.pre_exec(move || {
                sys::enter_in_child(inner.net.as_fd(), inner.mnt.as_fd(), &mut cwd_buffer)
            });
        }
        command
    }

    /// Sets a `net.*` sysctl inside this namespace only.
    ///
    /// `key` is in the dotted form (`net.ipv4.ip_forward`) or the path form
    /// (`net/ipv4/conf/eth0.1/forwarding`, for names that contain dots).
    ///
    /// ```
    /// # if !netns_test::privileged() { return Ok(()); }
    /// let ns = netns_test::NetNs::new()?;
    /// ns.sysctl("net.ipv4.ip_forward", "1")?;
    /// let inside = ns.run(|| std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward"))?;
    /// assert_eq!(inside.trim(), "1");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn sysctl(&self, key: &str, value: &str) -> Result<(), Error> {
        let path = sysctl_path(key)?;
        let write = || {
            sys::write_existing(&path, value.as_bytes()).map_err(|e| {
                Error::at(
                    format!(
                        "sysctl {key}={value} in network namespace net:[{}]: write",
                        self.inner.id.ino
                    ),
                    &path,
                    e,
                )
            })
        };
        if sys::thread_ns_id(NsKind::Net).ok() == Some(self.inner.id) {
            write()
        } else {
            self.run(write)
        }
    }

    /// A path to this network namespace that other processes can open while
    /// this handle lives, e.g. `nsenter --net=PATH`.
    pub fn net_path(&self) -> PathBuf {
        fd_path(&self.inner.net)
    }

    /// A path to this namespace's mount namespace (its own `/sys` and
    /// `/etc/hosts`) while this handle lives, e.g. `nsenter --mount=PATH`.
    pub fn mount_path(&self) -> PathBuf {
        fd_path(&self.inner.mnt)
    }

    /// The inode number of the network namespace, as `ip netns identify`,
    /// `lsns` and `/proc/PID/ns/net` (`net:[INODE]`) show it.
    pub fn inode(&self) -> u64 {
        self.inner.id.ino
    }
}

impl AsFd for NetNs {
    /// The network namespace's file descriptor, for `setns(2)`.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inner.net.as_fd()
    }
}

impl fmt::Debug for NetNs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NetNs")
            .field("net", &format_args!("net:[{}]", self.inner.id.ino))
            .field("net_path", &self.net_path())
            .finish()
    }
}

impl PartialEq for NetNs {
    fn eq(&self, other: &NetNs) -> bool {
        self.inner.id == other.inner.id
    }
}

impl Eq for NetNs {}

#[cfg(feature = "tokio")]
fn current_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("netns-test: cannot build a tokio runtime")
}

fn fd_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!(
        "/proc/{}/fd/{}",
        sys::pid_in_proc(),
        fd.as_raw_fd()
    ))
}

/// What a new thread needs to enter a namespace.
struct Entry {
    ns: NetNs,
    cwd: Option<PathBuf>,
}

impl Entry {
    /// Moves the calling (new) thread into the namespace; panics if it cannot.
    fn enter_this_thread(&self) {
        let inner = &self.ns.inner;
        let entered = sys::unshare(nix::sched::CloneFlags::CLONE_FS, "unshare(CLONE_FS)")
            .and_then(|()| sys::setns_net_and_mount(inner.net.as_fd(), inner.mnt.as_fd()));
        if let Err(error) = entered {
            let rootless = if crate::os::userns::rootless() {
                " (this test runs rootless, in a user namespace, which holds no privilege over the host's namespaces)"
            } else {
                ""
            };
            panic!(
                "netns-test: cannot enter network namespace net:[{}]: {error}{rootless}",
                inner.id.ino
            );
        }
        if let Some(cwd) = &self.cwd {
            // setns(CLONE_NEWNS) moved us to `/`; a missing directory leaves us there.
            let _ = sys::chdir(cwd);
        }
    }
}

/// Maps a sysctl key to its file under `/proc/sys`, accepting only `net.*` keys.
fn sysctl_path(key: &str) -> Result<PathBuf, Error> {
    let invalid = |why: &str| {
        Error::invalid_input(
            "sysctl",
            format!(
                "key {key:?} {why}: write `net.ipv4.ip_forward` or `net/ipv4/conf/eth0.1/forwarding`"
            ),
        )
    };
    let relative = if key.contains('/') {
        key.to_owned()
    } else {
        key.replace('.', "/")
    };
    let relative = Path::new(&relative);
    if !relative.starts_with("net") {
        return Err(invalid(
            "is not a net.* sysctl, the only ones a network namespace has",
        ));
    }
    if relative
        .components()
        .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return Err(invalid("has an empty, `.` or `..` component"));
    }
    Ok(Path::new("/proc/sys").join(relative))
}

#[cfg(test)]
mod tests {
    use super::sysctl_path;

    #[test]
    fn sysctl_keys_map_to_proc_sys() {
        assert_eq!(
            sysctl_path("net.ipv4.ip_forward").unwrap().to_str(),
            Some("/proc/sys/net/ipv4/ip_forward")
        );
        assert_eq!(
            sysctl_path("net/ipv4/conf/eth0.1/forwarding")
                .unwrap()
                .to_str(),
            Some("/proc/sys/net/ipv4/conf/eth0.1/forwarding")
        );
        for bad in [
            "kernel.hostname",
            "net/../kernel/x",
            "/net/ipv4/ip_forward",
            "vm.swappiness",
        ] {
            let error = sysctl_path(bad).unwrap_err();
            assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput, "{bad}");
        }
    }
}
