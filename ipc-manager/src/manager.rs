//! [`Manager`]: a started server process (or a connection to one) that makes shared objects.
//!
//! ```text
//! Manager::start   spawn the server (a daemon child: it dies with us even if we are killed)
//!                  -> it binds, runs the initializer, reports its address on a pipe
//!                  -> we connect with the authkey and open our session
//! shutdown / drop  Op::Shutdown -> the server closes every connection and exits with 0
//!                  (SIGTERM, then SIGKILL, if it has not within SHUTDOWN_GRACE)
//! Manager::connect a session on a server someone else started (dropping it leaves the server)
//! ```

use std::time::Duration;

use ipc_core::conn::{Address, Connection};
use ipc_core::process::{JoinHandle, RemoteFn, StartMethod};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::client::{Client, Handle, unexpected};
use crate::custom::Served;
use crate::error::{Error, Result};
use crate::proxy::{
    Array, Barrier, Condition, Dict, Event, Internal, JoinableQueue, List, Lock, Namespace, Proxy,
    Queue, RLock, Semaphore, Set, Shared, Value, enc,
};
use crate::server::Server;
use crate::wire::{self, Init, MANAGER, Op, Out, Welcome};

/// How long a shut-down server has to exit before it is terminated.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// How long `start` waits for the server to report its address.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The server's counters (see [`Manager::stats`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Stats {
    /// Objects alive on the server.
    pub objects: u64,
    /// Client sessions (processes connected, or proxies in transit).
    pub sessions: u64,
    /// Open connections.
    pub connections: u64,
    /// Calls served since the server started (both paths).
    pub calls: u64,
    /// Of those, the calls read from a socket (remote clients; local ones before their
    /// shared-memory path is set up, and the few operations that carry descriptors).
    pub socket_calls: u64,
    /// Of those, the calls taken from a connection's shared-memory queue (local clients).
    pub shared_memory_calls: u64,
    /// The server's process id.
    pub pid: u32,
}

/// How to start a [`Manager`].
///
/// ```
/// use ipc_core::process::StartMethod;
///
/// fn greet(name: String) {
///     // Runs in the server process before it serves anyone.
///     assert_eq!(name, "server");
/// }
///
/// let m = ipc_manager::Manager::builder()
///     .start_method(StartMethod::Spawn)
///     .address("@my-manager-doc-example".parse()?)
///     .authkey(b"secret".to_vec())
///     .initializer(greet, "server".to_string())
///     .start()?;
/// assert_eq!(m.address().to_string(), "@my-manager-doc-example");
/// m.shutdown()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Default)]
pub struct Builder {
    method: Option<StartMethod>,
    address: Option<Address>,
    authkey: Option<Vec<u8>>,
    init: Option<Result<(ByteBuf, ByteBuf)>>,
    max_message: Option<u64>,
    types: Vec<Result<ByteBuf>>,
    sockets_only: bool,
}

impl std::fmt::Debug for Builder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder")
            .field("method", &self.method)
            .field("address", &self.address)
            .field("initializer", &self.init.is_some())
            .finish_non_exhaustive()
    }
}

impl Builder {
    /// How the server process is started (default: ipc-core's default start method).
    pub fn start_method(mut self, method: StartMethod) -> Builder {
        self.method = Some(method);
        self
    }

    /// Where the server listens (default: a fresh abstract Unix socket name). A TCP address
    /// (`"127.0.0.1:0"` picks a port) lets other hosts connect; the handshake authenticates
    /// but does not encrypt.
    pub fn address(mut self, address: Address) -> Builder {
        self.address = Some(address);
        self
    }

    /// The key clients must prove they know (default: 32 random bytes, see
    /// [`Manager::authkey`]).
    pub fn authkey(mut self, key: Vec<u8>) -> Builder {
        self.authkey = Some(key);
        self
    }

    /// A function the server runs with `arg` before it serves (Python's `initializer`,
    /// `initargs`); a panic in it fails [`start`](Self::start).
    pub fn initializer<A>(mut self, f: fn(A), arg: A) -> Builder
    where
        A: Serialize + DeserializeOwned,
    {
        self.init = Some((|| {
            let f = RemoteFn::new(f)?.erase();
            Ok((enc(&f)?, enc(&arg)?))
        })());
        self
    }

    /// Registers the custom type `T` in the server process (see [`served`](crate::served)):
    /// clients can then [`create`](Manager::create) `T` objects. The server runs this
    /// program's registration of `T`, so `T` must be a type of this executable (as the
    /// initializer must be a function of it); the clients may be any binary that knows `T`'s
    /// name and methods.
    pub fn register<T: Served + DeserializeOwned>(mut self) -> Builder {
        self.types.push((|| {
            let f = RemoteFn::new(crate::custom::register_remote::<T>)?.erase();
            enc(&f)
        })());
        self
    }

    /// Whether local clients move their calls to shared memory (default `true`; see the
    /// crate's notes): `false` keeps every call on the sockets, to measure or debug that path.
    pub fn shared_memory_path(mut self, allowed: bool) -> Builder {
        self.sockets_only = !allowed;
        self
    }

    /// The largest message the server accepts (default [`DEFAULT_MAX_MESSAGE`](crate::DEFAULT_MAX_MESSAGE));
    /// a client sending more is disconnected before anything is allocated for it.
    pub fn max_message_size(mut self, bytes: u64) -> Builder {
        self.max_message = Some(bytes);
        self
    }

    /// Starts the server process and connects to it.
    pub fn start(self) -> Result<Manager> {
        let authkey = match self.authkey {
            Some(k) => k,
            None => {
                let mut k = vec![0u8; 32];
                getrandom::fill(&mut k).map_err(|e| Error::Refused(e.to_string()))?;
                k
            }
        };
        let address = match self.address {
            Some(a) => a,
            None => {
                let mut r = [0u8; 8];
                getrandom::fill(&mut r).map_err(|e| Error::Refused(e.to_string()))?;
                Address::Abstract(format!(
                    "ipc-manager-{}-{:016x}",
                    std::process::id(),
                    u64::from_le_bytes(r)
                ))
            }
        };
        let init = self.init.transpose()?;
        let types = self.types.into_iter().collect::<Result<Vec<_>>>()?;
        let (report, theirs) = ipc_core::conn::pipe()?;
        let boot = Boot {
            address: address.to_string(),
            authkey: ByteBuf::from(authkey.clone()),
            max_message: self.max_message.unwrap_or(wire::DEFAULT_MAX_MESSAGE),
            init,
            types,
            sockets_only: self.sockets_only,
            report: theirs,
        };
        let mut builder = ipc_core::process::Builder::new()
            .name("ipc-manager")
            .daemon(true);
        if let Some(m) = self.method {
            builder = builder.start_method(m);
        }
        let server = builder.spawn(boot, server_main)?;
        let reported: std::result::Result<(String, Welcome), String> =
            match report.recv_timeout(START_TIMEOUT) {
                Ok(r) => r,
                Err(e) => {
                    let _ = server.kill();
                    let code = server.join_timeout(SHUTDOWN_GRACE).ok();
                    return Err(Error::Refused(format!(
                        "the server process did not start ({e}; exit code {code:?})"
                    )));
                }
            };
        let (address, welcome) = match reported {
            Ok(r) => r,
            Err(why) => {
                let _ = server.join_timeout(SHUTDOWN_GRACE);
                return Err(Error::Refused(why));
            }
        };
        let address: Address = address.parse()?;
        // The pipe that carried the report is our first connection, already in a session.
        let client = Client::in_session(report, &address, &authkey, welcome);
        Ok(Manager {
            client,
            address,
            authkey,
            server: Some(server),
        })
    }
}

/// What the server process is started with.
#[derive(Serialize, Deserialize)]
struct Boot {
    address: String,
    authkey: ByteBuf,
    max_message: u64,
    init: Option<(ByteBuf, ByteBuf)>,
    /// The registrations of custom types to run (`RemoteFn<(), ()>`s).
    types: Vec<ByteBuf>,
    sockets_only: bool,
    /// Where the server reports `Ok((address, welcome))` or `Err(why)` once it listens; the
    /// owner's first connection afterwards.
    report: Connection,
}

/// The server process's function.
fn server_main(boot: Boot) {
    let ready = (|| -> std::result::Result<Server, String> {
        let address: Address = boot.address.parse().map_err(|e| format!("{e}"))?;
        let server = Server::bind_with(&address, &boot.authkey, boot.max_message)
            .map_err(|e| format!("the server cannot listen at {address}: {e}"))?;
        server.set_shared_memory_path(!boot.sockets_only);
        for f in &boot.types {
            let f: RemoteFn<(), ()> = ipc_core::codec::decode_plain(f)
                .map_err(|e| format!("a type cannot be registered in the server: {e}"))?;
            f.call_encoded(&[], Vec::new())
                .map_err(|e| format!("a type cannot be registered in the server: {e}"))?;
        }
        if let Some((f, arg)) = &boot.init {
            let f: RemoteFn<(), ()> = ipc_core::codec::decode_plain(f)
                .map_err(|e| format!("the initializer cannot run in the server: {e}"))?;
            match std::panic::catch_unwind(|| f.call_encoded(arg, Vec::new())) {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(format!("the initializer failed: {e}")),
                Err(p) => {
                    return Err(format!(
                        "the initializer panicked: {}",
                        crate::error::panic_message(&*p)
                    ));
                }
            }
        }
        Ok(server)
    })();
    match ready {
        Ok(server) => {
            if let Err(e) = server.adopt_owner(boot.report) {
                // The owner is gone (or the server has no thread for it): nobody to serve.
                eprintln!("ipc-manager: the server cannot serve its owner: {e}");
                std::process::exit(1);
            }
            if let Err(e) = server.serve() {
                eprintln!("ipc-manager: the server stopped: {e}");
                std::process::exit(1);
            }
        }
        Err(why) => {
            let _ = boot.report.send(&Err::<(String, Welcome), String>(why));
        }
    }
}

/// A manager: a server process holding shared objects, and this process's session with it
/// (Python's `multiprocessing.Manager()`).
///
/// Objects made through it are reached through typed proxies ([`Dict`], [`List`],
/// [`Namespace`], [`Queue`], [`Lock`], ...), which can be cloned and passed to other processes
/// (as process arguments or through a `Connection`) under every start method.
///
/// ```
/// use ipc_manager::{Dict, Manager};
///
/// fn worker((d, n): (Dict<String, u64>, u64)) {
///     for _ in 0..n {
///         d.fetch_add("hits".into(), 1).unwrap(); // atomic on the server
///     }
/// }
///
/// let m = Manager::start()?;
/// let d = m.dict::<String, u64>()?;
/// let children = (0..2)
///     .map(|_| ipc_core::process::spawn((d.clone(), 100), worker))
///     .collect::<Result<Vec<_>, _>>()?;
/// for c in children {
///     c.join()?;
/// }
/// assert_eq!(d.get("hits")?, Some(200));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Manager {
    client: Client,
    address: Address,
    authkey: Vec<u8>,
    server: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manager")
            .field("address", &self.address)
            .field("server_pid", &self.client.server_pid())
            .field("owner", &self.server.is_some())
            .finish_non_exhaustive()
    }
}

impl Manager {
    /// Starts a manager with the defaults (see [`Builder`]).
    pub fn start() -> Result<Manager> {
        Builder::default().start()
    }

    /// How to start a manager with other settings.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// Connects to a running server (one started by another process's [`Manager::start`],
    /// or a standalone [`Server`]). Dropping the returned manager leaves the server running;
    /// [`shutdown`](Self::shutdown) asks it to stop.
    pub fn connect(address: &Address, authkey: &[u8]) -> Result<Manager> {
        Ok(Manager {
            client: Client::connect(address, authkey)?,
            address: address.clone(),
            authkey: authkey.to_vec(),
            server: None,
        })
    }

    /// Where the server listens.
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// The key clients must prove they know (to give to [`Manager::connect`] in another
    /// program; proxies passed to child processes never carry it).
    pub fn authkey(&self) -> &[u8] {
        &self.authkey
    }

    /// The server's process id.
    pub fn server_pid(&self) -> u32 {
        self.client.server_pid()
    }

    /// The server's counters.
    pub fn stats(&self) -> Result<Stats> {
        match self.client.call(MANAGER, Op::Stats, None)? {
            Out::Stats(s) => Ok(s),
            other => Err(unexpected(&other)),
        }
    }

    /// A new object, behind a proxy of type `P`.
    fn make<P: Internal>(&self, init: Init) -> Result<P> {
        match self.client.call(MANAGER, Op::Create(init), None)? {
            Out::Object(obj) => Ok(P::from_shared(self.handle(obj))),
            other => Err(unexpected(&other)),
        }
    }

    fn handle(&self, obj: u64) -> Shared {
        Shared::new(Handle {
            client: self.client.clone(),
            obj,
        })
    }

    /// Names `proxy`'s object on the server, so that any client can
    /// [`lookup`](Self::lookup) it (Python's `register` of a shared object, for programs
    /// that connect with [`Manager::connect`] and hold no proxy yet). The name keeps the
    /// object alive until [`unpublish`](Self::unpublish)ed or published again.
    ///
    /// ```
    /// use ipc_manager::{Dict, Manager};
    /// let m = Manager::start()?;
    /// let scores = m.dict::<String, u32>()?;
    /// m.publish("scores", &scores)?;
    /// // Another program: Manager::connect(address, key)?.lookup("scores")
    /// let same: Dict<String, u32> = m.lookup("scores")?;
    /// same.insert("ada".into(), 1)?;
    /// assert_eq!(scores.get("ada")?, Some(1));
    /// assert!(m.lookup::<ipc_manager::Queue<u32>>("scores").is_err()); // Error::WrongKind
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn publish(&self, name: &str, proxy: &impl Proxy) -> Result<()> {
        match proxy.shared().call(Op::Publish(name.into()))? {
            Out::Unit => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Removes a published name; whether it existed.
    pub fn unpublish(&self, name: &str) -> Result<bool> {
        match self
            .client
            .call(MANAGER, Op::Unpublish(name.into()), None)?
        {
            Out::Flag(b) => Ok(b),
            other => Err(unexpected(&other)),
        }
    }

    /// The object published as `name`, behind a proxy of type `P`: [`Error::NoSuchName`] if
    /// nothing is, [`Error::WrongKind`] if it is another kind of object.
    pub fn lookup<P: Proxy>(&self, name: &str) -> Result<P> {
        match self.client.call(MANAGER, Op::Lookup(name.into()), None)? {
            Out::Named { obj, kind } => {
                let h = self.handle(obj); // releases the reference if we return an error
                if P::KINDS.contains(&kind.as_str()) {
                    Ok(P::from_shared(h))
                } else {
                    Err(Error::WrongKind {
                        found: kind,
                        expected: P::KINDS.join(" or "),
                    })
                }
            }
            other => Err(unexpected(&other)),
        }
    }

    /// A new empty [`Dict`].
    pub fn dict<K, V>(&self) -> Result<Dict<K, V>> {
        self.make(Init::Dict)
    }

    /// A new object of the custom type `T`, holding `value`, and its proxy (Python's
    /// `manager.Counter(...)` after `register('Counter', Counter)`). The server's process
    /// must have registered `T` ([`Builder::register`], or [`register`](crate::register) beside
    /// a standalone server): else [`Error::NoSuchType`](crate::Error::NoSuchType).
    pub fn create<T: Served + Serialize>(&self, value: &T) -> Result<T::Proxy> {
        self.make(Init::Custom {
            name: T::NAME.into(),
            // Plain: a client proxy inside the state is refused (the server cannot decode it).
            state: enc(value)?,
        })
    }

    /// A new empty [`Set`].
    pub fn set<T>(&self) -> Result<Set<T>> {
        self.make(Init::Set)
    }

    /// A new [`List`] holding `items`.
    pub fn list<T: Serialize>(&self, items: impl IntoIterator<Item = T>) -> Result<List<T>> {
        let items: Vec<T> = items.into_iter().collect();
        self.make(Init::List(self.client.store_each(&items)?))
    }

    /// A new empty [`Namespace`].
    pub fn namespace(&self) -> Result<Namespace> {
        self.make(Init::Namespace)
    }

    /// A new [`Value`] holding `value`.
    pub fn value<T: Serialize>(&self, value: T) -> Result<Value<T>> {
        self.make(Init::Value(self.client.store(&value)?))
    }

    /// A new fixed-length [`Array`] holding `items`.
    pub fn array<T: Serialize>(&self, items: impl IntoIterator<Item = T>) -> Result<Array<T>> {
        let items: Vec<T> = items.into_iter().collect();
        self.make(Init::Array(self.client.store_each(&items)?))
    }

    /// A new [`Queue`] of at most `maxsize` items (0: unbounded).
    pub fn queue<T>(&self, maxsize: usize) -> Result<Queue<T>> {
        self.make(Init::Queue {
            maxsize: maxsize as u64,
            joinable: false,
        })
    }

    /// A new [`JoinableQueue`] of at most `maxsize` items (0: unbounded).
    pub fn joinable_queue<T>(&self, maxsize: usize) -> Result<JoinableQueue<T>> {
        self.make(Init::Queue {
            maxsize: maxsize as u64,
            joinable: true,
        })
    }

    /// A new [`Lock`].
    pub fn lock(&self) -> Result<Lock> {
        self.make(Init::Lock { reentrant: false })
    }

    /// A new [`RLock`].
    pub fn rlock(&self) -> Result<RLock> {
        self.make(Init::Lock { reentrant: true })
    }

    /// A new [`Semaphore`] with `value` units.
    pub fn semaphore(&self, value: u64) -> Result<Semaphore> {
        self.make(Init::Semaphore {
            value,
            bounded: false,
        })
    }

    /// A new bounded [`Semaphore`]: releasing it past `value` is an error.
    #[doc(alias = "BoundedSemaphore")]
    pub fn bounded_semaphore(&self, value: u64) -> Result<Semaphore> {
        self.make(Init::Semaphore {
            value,
            bounded: true,
        })
    }

    /// A new [`Event`], not set.
    pub fn event(&self) -> Result<Event> {
        self.make(Init::Event)
    }

    /// A new [`Condition`] with a lock of its own (an RLock).
    pub fn condition(&self) -> Result<Condition> {
        self.make(Init::Condition { lock: None })
    }

    /// A new [`Condition`] around `lock` (a manager [`Lock`] or [`RLock`] of this manager).
    pub fn condition_with(&self, lock: &impl AsLock) -> Result<Condition> {
        self.make(Init::Condition {
            lock: Some(lock.lock_id()),
        })
    }

    /// A new [`Barrier`] for `parties` parties.
    pub fn barrier(&self, parties: u64) -> Result<Barrier> {
        self.make(Init::Barrier { parties })
    }

    /// Stops the server: it closes every connection and exits. Proxies then fail with
    /// [`Error::ServerGone`]. For a started manager, waits for the server to exit (terminating
    /// it after [`SHUTDOWN_GRACE`]) and reports an exit code other than 0 as an error.
    pub fn shutdown(mut self) -> Result<()> {
        self.stop()
    }

    fn stop(&mut self) -> Result<()> {
        let asked = match self.client.call(MANAGER, Op::Shutdown, None) {
            Ok(_) | Err(Error::ServerGone(_)) => Ok(()),
            Err(e) => Err(e),
        };
        let Some(server) = self.server.take() else {
            return asked;
        };
        let code = match server.join_timeout(SHUTDOWN_GRACE) {
            Ok(code) => code,
            Err(_) => {
                let _ = server.terminate();
                match server.join_timeout(SHUTDOWN_GRACE) {
                    Ok(code) => code,
                    Err(_) => {
                        let _ = server.kill();
                        server.join_timeout(SHUTDOWN_GRACE)?
                    }
                }
            }
        };
        asked?;
        if code == 0 {
            Ok(())
        } else {
            Err(Error::Refused(format!(
                "the server process exited with code {code}"
            )))
        }
    }
}

impl Drop for Manager {
    /// A started manager's server is shut down (as [`shutdown`](Manager::shutdown)); a
    /// connected one is left running.
    fn drop(&mut self) {
        if self.server.is_some() {
            let _ = self.stop();
        }
    }
}

/// A manager lock a [`Condition`] can be made around ([`Lock`] or [`RLock`]).
pub trait AsLock: sealed::Sealed {
    #[doc(hidden)]
    fn lock_id(&self) -> u64;
}

impl AsLock for Lock {
    fn lock_id(&self) -> u64 {
        self.h.handle.obj
    }
}

impl AsLock for RLock {
    fn lock_id(&self) -> u64 {
        self.h.handle.obj
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for crate::Lock {}
    impl Sealed for crate::RLock {}
}
