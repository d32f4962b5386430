//! The manager's failure contract with real processes and real sockets: a killed server, a
//! killed client holding a lock, a killed owner, garbage on the wire, wrong keys, TCP from a
//! separate process, restarts on the same address (checklist 111-113 ported).

use std::os::fd::AsFd;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ipc_core::conn::{Address, Connection};
use ipc_core::process::{Builder, StartMethod};
use ipc_manager::{Dict, Error, Event, Lock, Manager, Server};

mod common;
use common::{LONG, kill_pid, wait_gone};

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// Calls until the server is gone; returns the error's text and when it came.
fn call_until_gone(d: Dict<u32, u64>) -> (String, u128, bool) {
    let me = std::process::id();
    let mut i = 0u64;
    loop {
        let r = d.insert(me, i).and_then(|_| d.get(&me));
        if let Err(e) = r {
            let gone = matches!(e, Error::ServerGone(_));
            return (e.to_string(), now_ns(), gone);
        }
        i += 1;
    }
}

#[test]
fn a_killed_server_fails_every_call_within_a_second() {
    let m = Manager::start().unwrap();
    let d = m.dict::<u32, u64>().unwrap();
    let clients: Vec<_> = (0..4)
        .map(|_| ipc_core::process::spawn(d.clone(), call_until_gone).unwrap())
        .collect();
    let _kill = common::KillOnPanic(clients.iter().map(|c| c.pid()).collect());
    // Every client is calling in its loop.
    assert!(common::eventually(|| d.len().unwrap() == 4));
    let killed_at = now_ns();
    kill_pid(m.server_pid());
    for c in clients {
        let (msg, at, gone) = c.join().unwrap();
        assert!(gone, "expected ServerGone, got {msg}");
        let after = Duration::from_nanos((at.saturating_sub(killed_at)) as u64);
        assert!(
            after < Duration::from_secs(1),
            "the error came {after:?} after the kill"
        );
    }
    assert!(matches!(d.get(&1), Err(Error::ServerGone(_))));
    // Found by `cargo xtask chaos` (manager-server): a proxy of a dead server given to a new
    // process failed with postcard's bare "Serde Serialization Error"; the error says why.
    let e = ipc_core::process::spawn(d.clone(), call_until_gone)
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(e.contains("a proxy cannot travel"), "{e}");
    assert!(
        m.shutdown().is_err(),
        "the server was killed: not exit code 0"
    );
}

fn hold_lock((lock, held): (Lock, Event)) {
    lock.acquire().unwrap();
    held.set().unwrap();
    std::thread::sleep(LONG * 4);
}

#[test]
fn a_client_killed_holding_a_lock_leaves_it_owner_died() {
    let m = Manager::start().unwrap();
    let lock = m.lock().unwrap();
    let held = m.event().unwrap();
    for method in common::METHODS {
        held.clear().unwrap();
        let holder = common::builder(method)
            .spawn((lock.clone(), held.clone()), hold_lock)
            .unwrap();
        let _reap = common::Reap(&holder);
        assert!(held.wait_timeout(LONG).unwrap(), "{method}");
        assert!(!lock.try_acquire().unwrap());
        let waiter = {
            let lock = lock.clone();
            std::thread::spawn(move || lock.acquire_timeout(LONG))
        };
        holder.kill().unwrap();
        assert_eq!(holder.join_timeout(LONG).unwrap(), -9);
        match waiter.join().unwrap() {
            Err(Error::OwnerDied) => {}
            other => panic!("{method}: expected OwnerDied, got {other:?}"),
        }
        // The report came with the lock: we hold it, and it works as before.
        assert!(lock.is_locked().unwrap());
        lock.release().unwrap();
        assert!(lock.try_acquire().unwrap());
        lock.release().unwrap();
    }
}

fn create_and_wait((address, key, made): (String, Vec<u8>, Event)) {
    let m = Manager::connect(&address.parse().unwrap(), &key).unwrap();
    let mine: Vec<_> = (0..50).map(|_| m.dict::<u8, u8>().unwrap()).collect();
    made.set().unwrap();
    std::thread::sleep(LONG * 4);
    drop(mine);
}

#[test]
fn a_killed_client_releases_what_only_it_referenced() {
    let m = Manager::start().unwrap();
    let made = m.event().unwrap();
    let kept = m.dict::<u8, u8>().unwrap();
    let before = m.stats().unwrap();
    let arg = (m.address().to_string(), m.authkey().to_vec(), made.clone());
    let client = ipc_core::process::spawn(arg, create_and_wait).unwrap();
    let _reap = common::Reap(&client);
    assert!(made.wait_timeout(LONG).unwrap());
    assert_eq!(m.stats().unwrap().objects, before.objects + 50);
    client.kill().unwrap();
    client.join_timeout(LONG).unwrap();
    // Each of the child's sessions (its manager's, the event's) ends when the server's thread
    // for it sees the hang-up: eventually, not at once.
    assert!(
        common::eventually(|| {
            let now = m.stats().unwrap();
            now.objects == before.objects && now.sessions == before.sessions
        }),
        "{:?}",
        m.stats()
    );
    kept.insert(1, 1).unwrap();
}

/// An authenticated connection that has said hello (`[0, 2]` is postcard's `Hello::New {
/// version: 2 }`): the server now reads requests from it.
fn raw_session(m: &Manager) -> Connection {
    let c = ipc_core::conn::connect(m.address(), Some(m.authkey())).unwrap();
    c.send_bytes(&[0, 2]).unwrap();
    let welcome = c.recv_bytes().unwrap();
    assert_eq!(welcome[0], 0, "Ok(Welcome)");
    c
}

/// Whether the server hung up on `c` (after at most one reply explaining why).
fn hung_up(c: &Connection) -> bool {
    match c.recv_bytes() {
        Err(ipc_core::Error::Eof) => true,
        Ok(_) => matches!(c.recv_bytes(), Err(ipc_core::Error::Eof)),
        Err(_) => true,
    }
}

fn write_raw(c: &Connection, bytes: &[u8]) {
    rustix::net::send(c.as_fd(), bytes, rustix::net::SendFlags::NOSIGNAL).unwrap();
}

#[test]
fn garbage_oversize_and_truncated_frames_end_only_their_connection() {
    let m = Manager::start().unwrap();
    let d = m.dict::<u32, u32>().unwrap();
    d.insert(0, 0).unwrap();
    let pid = m.server_pid();
    let rss_before = common::rss_kib(pid);

    // Before authentication: anything but the handshake is refused, nothing is served.
    let raw = rustix::net::socket(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::SEQPACKET,
        None,
    )
    .unwrap();
    let Address::Abstract(name) = m.address() else {
        panic!("the default address is abstract")
    };
    let addr = rustix::net::SocketAddrUnix::new_abstract_name(name.as_bytes()).unwrap();
    rustix::net::connect(&raw, &addr).unwrap();
    let c = Connection::from_socket(raw);
    let _challenge = c.recv_bytes().unwrap();
    write_raw(&c, b"GET / HTTP/1.1\r\n\r\n");
    assert!(hung_up(&c));
    d.insert(1, 1).unwrap();

    // A hello that is not one.
    let c = ipc_core::conn::connect(m.address(), Some(m.authkey())).unwrap();
    c.send_bytes(&[0xff; 16]).unwrap();
    assert!(hung_up(&c));
    // Another protocol version.
    let c = ipc_core::conn::connect(m.address(), Some(m.authkey())).unwrap();
    c.send_bytes(&[0, 99]).unwrap();
    let reply = c.recv_bytes().unwrap();
    assert_eq!(reply[0], 1, "Err(Fault::Version)");
    assert!(hung_up(&c));
    d.insert(2, 2).unwrap();

    // A request that does not decode.
    let c = raw_session(&m);
    c.send_bytes(&[0x05, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff])
        .unwrap();
    assert!(hung_up(&c));
    d.insert(3, 3).unwrap();

    // A frame announcing 1 GiB, more than the server's 64 MiB maximum: refused before
    // anything is allocated for it.
    let c = raw_session(&m);
    let mut header = Vec::new();
    header.extend_from_slice(&(1u64 << 30).to_le_bytes());
    header.extend_from_slice(&0u32.to_le_bytes());
    write_raw(&c, &header);
    assert!(hung_up(&c));
    d.insert(4, 4).unwrap();

    // A frame cut short: the header promises 100 bytes, 10 come, then the client is gone.
    let c = raw_session(&m);
    let mut frame = Vec::new();
    frame.extend_from_slice(&100u64.to_le_bytes());
    frame.extend_from_slice(&0u32.to_le_bytes());
    frame.extend_from_slice(&[1; 10]);
    write_raw(&c, &frame);
    drop(c);
    d.insert(5, 5).unwrap();

    for i in 0..6 {
        assert_eq!(
            d.get(&i).unwrap(),
            Some(i),
            "other clients' calls kept succeeding"
        );
    }
    assert!(
        common::eventually(|| m.stats().unwrap().connections == 1),
        "every bad connection was closed: {:?}",
        m.stats()
    );
    let grown = common::rss_kib(pid).saturating_sub(rss_before);
    assert!(grown < 16 * 1024, "the server grew by {grown} KiB");
    m.shutdown().unwrap();
}

// Checklist 111: a TCP manager with an authkey, used by a separate process that exchanges
// values of several types with it; a wrong key is refused.
/// Values of the types checklist 111 exchanges: str, None, bool, float, bytes.
type Exchange = (String, Option<u8>, bool, f64, Vec<u8>);

fn tcp_client((address, key): (String, Vec<u8>)) -> Result<Vec<String>, String> {
    let m = Manager::connect(&address.parse().unwrap(), &key).map_err(|e| e.to_string())?;
    let q: ipc_manager::Queue<Exchange> = m.lookup("exchange").map_err(|e| e.to_string())?;
    let got = q.get().map_err(|e| e.to_string())?;
    q.put((
        got.0.to_uppercase(),
        got.1.map(|x| x + 1),
        !got.2,
        got.3 * 2.0,
        got.4.clone(),
    ))
    .map_err(|e| e.to_string())?;
    Ok(vec![got.0, format!("{:?}", got.1)])
}

#[test]
fn cpython_111_a_tcp_manager_serves_a_separate_process_with_the_right_key_only() {
    let key = b"tcp-key".to_vec();
    let m = Manager::builder()
        .address("127.0.0.1:0".parse().unwrap())
        .authkey(key.clone())
        .start()
        .unwrap();
    let Address::Tcp(sa) = m.address() else {
        panic!("a TCP address")
    };
    assert!(sa.port() != 0, "the picked port is reported");
    let q = m
        .queue::<(String, Option<u8>, bool, f64, Vec<u8>)>(0)
        .unwrap();
    m.publish("exchange", &q).unwrap();
    q.put(("héllo".into(), None, true, 1.5, b"\x00\xff".to_vec()))
        .unwrap();
    let client = Builder::new()
        .start_method(StartMethod::Spawn)
        .spawn((m.address().to_string(), key.clone()), tcp_client)
        .unwrap();
    assert_eq!(client.join().unwrap().unwrap(), ["héllo", "None"]);
    assert_eq!(
        q.get().unwrap(),
        ("HÉLLO".into(), None, false, 3.0, b"\x00\xff".to_vec())
    );
    let wrong = Builder::new()
        .start_method(StartMethod::Spawn)
        .spawn((m.address().to_string(), b"wrong".to_vec()), tcp_client)
        .unwrap();
    let err = wrong.join().unwrap().unwrap_err();
    assert!(err.to_lowercase().contains("authenticat"), "{err}");
    // A proxy made over TCP still travels to a child as a connection of its own.
    let d = m.dict::<u8, u8>().unwrap();
    let child =
        ipc_core::process::spawn(d.clone(), |d: Dict<u8, u8>| d.insert(1, 2).unwrap()).unwrap();
    assert_eq!(child.join().unwrap(), None);
    assert_eq!(d.get(&1).unwrap(), Some(2));
    m.shutdown().unwrap();
}

#[test]
fn a_wrong_key_is_refused_and_the_server_serves_on() {
    let server = Server::bind(&"127.0.0.1:0".parse().unwrap(), b"right").unwrap();
    let address = server.address().clone();
    let serving = std::thread::spawn(move || server.serve());
    match Manager::connect(&address, b"wrong") {
        Err(Error::Core(ipc_core::Error::Authentication(_))) => {}
        other => panic!("expected an authentication error, got {other:?}"),
    }
    let m = Manager::connect(&address, b"right").unwrap();
    let v = m.value(1u8).unwrap();
    assert_eq!(v.get().unwrap(), 1);
    m.shutdown().unwrap();
    serving.join().unwrap().unwrap();
}

// Checklist 112: a manager restarted on the same address right after shutdown works.
#[test]
fn cpython_112_restart_on_the_same_address() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = std::env::temp_dir().join(format!("ipc-manager-112-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let addresses = [
        format!("127.0.0.1:{port}"),
        dir.join("m.sock").display().to_string(),
    ];
    for address in addresses {
        for round in 0..2 {
            let m = Manager::builder()
                .address(address.parse().unwrap())
                .start()
                .unwrap_or_else(|e| panic!("start {round} at {address}: {e}"));
            let d = m.dict::<u8, u8>().unwrap();
            d.insert(round, round).unwrap();
            m.shutdown().unwrap();
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn own_a_manager((report, method): (Connection, StartMethod)) {
    let m = Manager::builder().start_method(method).start().unwrap();
    report.send(&m.server_pid()).unwrap();
    std::thread::sleep(LONG * 4);
}

// The owner runs in a fresh single-threaded process, so that it may start its server by fork
// too; the server is a daemon: its lifeline ends it with its owner.
#[test]
fn a_server_dies_within_a_second_of_its_owner_under_every_start_method() {
    for method in common::METHODS {
        let (ours, theirs) = ipc_core::conn::pipe().unwrap();
        let owner = Builder::new()
            .start_method(StartMethod::Spawn)
            .spawn((theirs, method), own_a_manager)
            .unwrap();
        let _reap = common::Reap(&owner);
        let server: u32 = ours.recv_timeout(LONG).unwrap();
        let _kill = common::KillOnPanic(vec![server]);
        owner.kill().unwrap();
        let killed = Instant::now();
        assert!(
            wait_gone(server, LONG),
            "the server outlived its owner ({method})"
        );
        let took = killed.elapsed();
        assert!(
            took < Duration::from_secs(1),
            "{method}: the server took {took:?} to die"
        );
        owner.join_timeout(LONG).unwrap();
    }
}

// Checklist 113: the initializer runs in the server before it serves; one that panics fails
// the start with its message.
fn write_pid(path: String) {
    std::fs::write(path, std::process::id().to_string()).unwrap();
}

fn refuse(why: String) {
    panic!("{why}")
}

#[test]
fn cpython_113_the_initializer_runs_in_the_server() {
    let path = std::env::temp_dir().join(format!("ipc-manager-113-{}", std::process::id()));
    let m = Manager::builder()
        .initializer(write_pid, path.display().to_string())
        .start()
        .unwrap();
    let written = std::fs::read_to_string(&path).unwrap();
    assert_eq!(written, m.server_pid().to_string());
    let _ = std::fs::remove_file(&path);
    m.shutdown().unwrap();

    let err = Manager::builder()
        .initializer(refuse, "no config".to_string())
        .start()
        .unwrap_err();
    assert!(err.to_string().contains("no config"), "{err}");
}
