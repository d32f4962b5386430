//! `Listener`, `connect` and the authkey handshake, with the client on a thread (the same with
//! a child process is in tests/conn_process.rs). Ports CPython checklist items 45-49 and 51.

mod conn_support;

use std::io::ErrorKind;
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use conn_support::{LIVENESS, every_family, header, unique_path};
use hmac::{Hmac, KeyInit, Mac};
use ipc_core::Error;
use ipc_core::conn::{
    Address, Connection, DEFAULT_HANDSHAKE_TIMEOUT, Listener, connect, connect_timeout, pipe,
};
use sha2::Sha256;

fn client_thread(
    addr: &Address,
    key: Option<&[u8]>,
    f: impl FnOnce(ipc_core::Result<Connection>) + Send + 'static,
) -> std::thread::JoinHandle<()> {
    let addr = addr.clone();
    let key = key.map(<[u8]>::to_vec);
    std::thread::spawn(move || f(connect(&addr, key.as_deref())))
}

#[test]
fn every_family_connects_and_exchanges_messages_with_and_without_a_key() {
    // cpython checklist 45 (threads here; a child process in conn_process.rs)
    for key in [None, Some(&b"a key"[..])] {
        for addr in every_family("families") {
            let listener = Listener::bind(&addr, key).unwrap();
            let client = client_thread(listener.address(), key, |c| {
                let c = c.unwrap();
                c.send(&"ping").unwrap();
                assert_eq!(c.recv::<String>().unwrap(), "pong");
            });
            let conn = listener.accept().unwrap();
            assert_eq!(conn.recv::<String>().unwrap(), "ping");
            conn.send(&"pong").unwrap();
            client.join().unwrap();
            if let Address::Tcp(a) = listener.address() {
                assert_ne!(a.port(), 0, "the bound port is reported");
            } else {
                assert_eq!(listener.address(), &addr);
            }
        }
    }
}

#[test]
fn unix_listener_connections_carry_descriptors() {
    let addr = Address::Unix(unique_path("fds"));
    let listener = Listener::bind(&addr, None).unwrap();
    let client = client_thread(&addr, None, |c| {
        let c = c.unwrap();
        let (x, y) = pipe().unwrap();
        c.send(&x).unwrap();
        assert_eq!(y.recv::<u32>().unwrap(), 77);
    });
    let conn = listener.accept().unwrap();
    let x: Connection = conn.recv().unwrap();
    x.send(&77u32).unwrap();
    client.join().unwrap();
}

#[test]
fn binding_an_address_in_use_fails_and_a_dropped_unix_listener_frees_its_path() {
    // cpython checklist 46
    for addr in every_family("inuse") {
        let first = Listener::bind(&addr, None).unwrap();
        match Listener::bind(first.address(), None) {
            Err(Error::Io(e)) => assert_eq!(e.kind(), ErrorKind::AddrInUse, "{addr}: {e}"),
            other => panic!("{addr}: expected AddrInUse, got {other:?}"),
        }
        let bound = first.address().clone();
        drop(first);
        if let Address::Unix(path) = &bound {
            assert!(!path.exists(), "the socket file is removed on drop");
        }
        // The address is free again (TCP: SO_REUSEADDR allows it at once).
        let again = Listener::bind(&bound, None).unwrap();
        drop(again);
    }
}

#[test]
fn a_unix_listener_does_not_remove_a_socket_file_that_replaced_its_own() {
    let path = unique_path("replaced");
    let first = Listener::bind(&Address::Unix(path.clone()), None).unwrap();
    std::fs::remove_file(&path).unwrap();
    let second = Listener::bind(&Address::Unix(path.clone()), None).unwrap();
    drop(first);
    assert!(path.exists(), "the newer listener's file must survive");
    drop(second);
    assert!(!path.exists());
}

#[test]
fn an_empty_authkey_is_a_valid_key_and_abstract_addresses_work() {
    // cpython checklist 47
    let addr: Address = format!("@ipc-conn-empty-key-{}", std::process::id())
        .parse()
        .unwrap();
    assert!(matches!(addr, Address::Abstract(_)));
    let listener = Listener::bind(&addr, Some(b"")).unwrap();
    let client = client_thread(&addr, Some(b""), |c| c.unwrap().send(&1u8).unwrap());
    let conn = listener.accept().unwrap();
    assert_eq!(conn.recv::<u8>().unwrap(), 1);
    client.join().unwrap();
    // The empty key is a key: a client with another key is refused.
    let client = client_thread(&addr, Some(b"x"), |c| {
        assert!(matches!(c, Err(Error::Authentication(_))));
    });
    assert!(matches!(listener.accept(), Err(Error::Authentication(_))));
    client.join().unwrap();
}

#[test]
fn a_client_that_sends_and_leaves_before_accept_still_delivers_and_poll_sees_replies() {
    // cpython checklist 48
    for addr in every_family("early") {
        let listener = Listener::bind(&addr, None).unwrap();
        let c = connect(listener.address(), None).unwrap();
        c.send_bytes(b"hello before accept").unwrap();
        drop(c);
        let conn = listener.accept().unwrap();
        assert_eq!(conn.recv_bytes().unwrap(), b"hello before accept");
        assert!(matches!(conn.recv_bytes(), Err(Error::Eof)));

        let c = connect(listener.address(), None).unwrap();
        let conn = listener.accept().unwrap();
        conn.send_bytes(b"reply").unwrap();
        assert!(c.poll(Some(Duration::from_secs(1))).unwrap());
        assert_eq!(c.recv_bytes().unwrap(), b"reply");
    }
}

#[test]
fn addresses_parse_display_and_refuse_foreign_families() {
    // cpython checklist 49: a Windows named-pipe address on Linux is an error.
    for bad in [r"\\.\pipe\test", r"\\.\test", ""] {
        assert!(
            matches!(bad.parse::<Address>(), Err(Error::Misuse(_))),
            "{bad:?}"
        );
    }
    let too_long = format!("@{}", "n".repeat(108));
    assert!(matches!(too_long.parse::<Address>(), Err(Error::Misuse(_))));
    for (text, expected) in [
        ("/tmp/x.sock", Address::Unix("/tmp/x.sock".into())),
        ("relative.sock", Address::Unix("relative.sock".into())),
        ("@name", Address::Abstract("name".into())),
        ("\0name", Address::Abstract("name".into())),
        (
            "127.0.0.1:80",
            Address::Tcp("127.0.0.1:80".parse().unwrap()),
        ),
        ("[::1]:80", Address::Tcp("[::1]:80".parse().unwrap())),
    ] {
        let parsed: Address = text.parse().unwrap();
        assert_eq!(parsed, expected, "{text:?}");
        assert_eq!(parsed.to_string().parse::<Address>().unwrap(), parsed);
    }
    // Binding a too-long abstract name built directly is refused the same way.
    assert!(matches!(
        Listener::bind(&Address::Abstract("n".repeat(200)), None),
        Err(Error::Misuse(_))
    ));
}

#[test]
fn a_wrong_key_fails_on_both_sides_and_the_listener_carries_on() {
    // cpython checklist 51
    for addr in every_family("wrongkey") {
        let listener = Listener::bind(&addr, Some(b"right")).unwrap();
        let client = client_thread(listener.address(), Some(b"wrong"), |c| {
            let err = c.unwrap_err();
            assert!(matches!(err, Error::Authentication(_)), "{err}");
        });
        let err = listener.accept().unwrap_err();
        assert!(matches!(err, Error::Authentication(_)), "{err}");
        client.join().unwrap();
        // The next, honest client is served.
        let client = client_thread(listener.address(), Some(b"right"), |c| {
            c.unwrap().send(&"in").unwrap();
        });
        assert_eq!(listener.accept().unwrap().recv::<String>().unwrap(), "in");
        client.join().unwrap();
    }
}

#[test]
fn a_client_without_a_key_is_refused_by_a_listener_with_one() {
    let addr = Address::Unix(unique_path("nokey"));
    let listener = Listener::bind(&addr, Some(b"k")).unwrap();
    let client = client_thread(&addr, None, |c| {
        let c = c.unwrap();
        c.send_bytes(b"hello, no key").unwrap();
        // The listener's challenge arrives as a message, then the refusal.
        let first = c.recv_bytes().unwrap();
        assert!(first.starts_with(b"#CHALLENGE#{sha256}"));
        assert_eq!(c.recv_bytes().unwrap(), b"#FAILURE#");
    });
    let err = listener.accept().unwrap_err();
    assert!(matches!(err, Error::Authentication(_)), "{err}");
    client.join().unwrap();
}

#[test]
fn a_client_with_a_key_facing_a_listener_without_one_fails_instead_of_hanging() {
    let addr = Address::Unix(unique_path("srvnokey"));
    let listener = Listener::bind(&addr, None).unwrap();
    // The server talks first: the client sees a message that is not a challenge.
    let a2 = addr.clone();
    let client = std::thread::spawn(move || connect(&a2, Some(b"k")));
    let conn = listener.accept().unwrap();
    conn.send(&"welcome, no handshake here").unwrap();
    let err = client.join().unwrap().unwrap_err();
    assert!(matches!(err, Error::Authentication(_)), "{err}");
    // The server says nothing: the client's deadline ends the wait.
    let a2 = addr.clone();
    let client = std::thread::spawn(move || {
        let start = Instant::now();
        let res = connect_timeout(&a2, Some(b"k"), Some(Duration::from_millis(200)));
        (res, start.elapsed())
    });
    let _conn = listener.accept().unwrap();
    let (res, elapsed) = client.join().unwrap();
    assert!(matches!(res, Err(Error::Timeout)), "{res:?}");
    assert!(elapsed >= Duration::from_millis(200));
}

#[test]
fn a_silent_or_garbage_client_cannot_stall_or_crash_the_accept_loop() {
    let addr = Address::Unix(unique_path("silent"));
    let mut listener = Listener::bind(&addr, Some(b"k")).unwrap();
    assert_eq!(
        listener.handshake_timeout(),
        Some(DEFAULT_HANDSHAKE_TIMEOUT)
    );
    listener.set_handshake_timeout(Some(Duration::from_millis(200)));
    // Silent: a timeout, after at least the handshake timeout.
    let silent = connect(&addr, None).unwrap();
    let start = Instant::now();
    assert!(matches!(listener.accept(), Err(Error::Timeout)));
    assert!(start.elapsed() >= Duration::from_millis(200));
    drop(silent);
    // A giant frame length: refused at once, nothing allocated.
    let giant = connect(&addr, None).unwrap();
    let raw = rustix::net::send(&giant, &header(1 << 40, 0), rustix::net::SendFlags::empty());
    assert_eq!(raw.unwrap(), 12);
    let err = listener.accept().unwrap_err();
    assert!(
        matches!(&err, Error::Authentication(m) if m.contains("does not speak")),
        "{err}"
    );
    // Hanging up mid-handshake.
    drop(connect(&addr, None).unwrap());
    assert!(matches!(listener.accept(), Err(Error::Authentication(_))));
    // And an honest client still gets through.
    let client = client_thread(&addr, Some(b"k"), |c| c.unwrap().send(&5u8).unwrap());
    assert_eq!(listener.accept().unwrap().recv::<u8>().unwrap(), 5);
    client.join().unwrap();
}

type HmacSha256 = Hmac<Sha256>;

#[test]
fn bogus_answers_are_refused_by_deliver_challenge_and_the_peer_is_told() {
    // cpython checklist 51: a bogus reply -> AuthenticationError in deliver_challenge.
    let bogus: Vec<(&str, Vec<u8>)> = vec![
        ("a wrong digest", [&b"{sha256}"[..], &[0u8; 32]].concat()),
        ("no digest prefix (legacy MD5 style)", vec![0u8; 16]),
        ("another digest name", [&b"{md5}"[..], &[0u8; 16]].concat()),
        ("a truncated tag", [&b"{sha256}"[..], &[0u8; 31]].concat()),
        ("nothing", Vec::new()),
    ];
    for (what, answer) in bogus {
        let (server, client) = pipe().unwrap();
        let peer = std::thread::spawn(move || {
            let challenge = client.recv_bytes().unwrap();
            assert!(challenge.starts_with(b"#CHALLENGE#{sha256}"));
            client.send_bytes(&answer).unwrap();
            client.recv_bytes().unwrap()
        });
        let err = server
            .deliver_challenge(b"key", Some(LIVENESS))
            .unwrap_err();
        assert!(matches!(err, Error::Authentication(_)), "{what}: {err}");
        assert_eq!(peer.join().unwrap(), b"#FAILURE#", "{what}");
    }
}

#[test]
fn the_answer_is_an_hmac_sha256_over_the_prefixed_challenge() {
    // cpython checklist 51: responses carry a {digest} prefix, and the MAC covers the digest name.
    // The digest is SHA-256, never MD5 (known bug 12).
    let (client, fake_server) = pipe().unwrap();
    let answering = std::thread::spawn(move || client.answer_challenge(b"key", Some(LIVENESS)));
    let nonce = [7u8; 40];
    let signed = [&b"{sha256}"[..], &nonce[..]].concat();
    fake_server
        .send_bytes(&[&b"#CHALLENGE#"[..], &signed[..]].concat())
        .unwrap();
    let answer = fake_server.recv_bytes().unwrap();
    let tag = answer.strip_prefix(b"{sha256}").expect("prefixed answer");
    let mut mac = HmacSha256::new_from_slice(b"key").unwrap();
    mac.update(&signed);
    mac.verify_slice(tag)
        .expect("HMAC-SHA256 of \"{sha256}\" + nonce");
    // Without the prefix in the MAC input the tag differs.
    let mut unprefixed = HmacSha256::new_from_slice(b"key").unwrap();
    unprefixed.update(&nonce);
    assert!(unprefixed.verify_slice(tag).is_err());
    fake_server.send_bytes(b"#WELCOME#").unwrap();
    answering.join().unwrap().unwrap();
}

#[test]
fn bogus_challenges_and_verdicts_are_refused_by_answer_challenge() {
    // cpython checklist 51: a bogus challenge or verdict -> AuthenticationError in
    // answer_challenge; a peer that rejects us -> AuthenticationError too.
    let good_challenge = [&b"#CHALLENGE#{sha256}"[..], &[1u8; 32]].concat();
    // (what, challenge, verdict sent after reading the answer)
    type Case = (&'static str, Vec<u8>, Option<Vec<u8>>);
    let cases: Vec<Case> = vec![
        ("not a challenge", b"hello".to_vec(), None),
        (
            "legacy unprefixed challenge",
            [&b"#CHALLENGE#"[..], &[1u8; 32]].concat(),
            None,
        ),
        (
            "md5 challenge",
            [&b"#CHALLENGE#{md5}"[..], &[1u8; 32]].concat(),
            None,
        ),
        (
            "short nonce",
            [&b"#CHALLENGE#{sha256}"[..], &[1u8; 8]].concat(),
            None,
        ),
        (
            "failure verdict",
            good_challenge.clone(),
            Some(b"#FAILURE#".to_vec()),
        ),
        (
            "garbage verdict",
            good_challenge.clone(),
            Some(b"#WELCOME".to_vec()),
        ),
    ];
    for (what, challenge, verdict) in cases {
        let (client, fake_server) = pipe().unwrap();
        let answering = std::thread::spawn(move || client.answer_challenge(b"key", Some(LIVENESS)));
        fake_server.send_bytes(&challenge).unwrap();
        if let Some(v) = verdict {
            fake_server.recv_bytes().unwrap();
            fake_server.send_bytes(&v).unwrap();
        }
        let err = answering.join().unwrap().unwrap_err();
        assert!(matches!(err, Error::Authentication(_)), "{what}: {err}");
    }
}

#[test]
fn a_handshake_peer_sending_descriptors_or_oversized_frames_gets_an_error() {
    let (server, client) = pipe().unwrap();
    let (x, _y) = pipe().unwrap();
    let peer = std::thread::spawn(move || {
        client.recv_bytes().unwrap();
        client.send(&x).unwrap(); // a frame with a descriptor instead of an answer
        client
    });
    let err = server.deliver_challenge(b"k", Some(LIVENESS)).unwrap_err();
    assert!(matches!(err, Error::Authentication(_)), "{err}");
    drop(peer.join().unwrap());

    let (client, fake_server) = pipe().unwrap();
    fake_server.send_bytes(&[b'#'; 300]).unwrap(); // over the 256-byte handshake limit
    let err = client.answer_challenge(b"k", Some(LIVENESS)).unwrap_err();
    assert!(matches!(err, Error::Authentication(_)), "{err}");
}

#[test]
fn a_client_reaches_a_stream_listener_of_another_program() {
    // A Unix stream listener (Python's, say): the client falls back from SOCK_SEQPACKET.
    let path = unique_path("stream");
    let std_listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let addr = Address::Unix(path.clone());
    let client = client_thread(&addr, Some(b"k"), |c| {
        let c = c.unwrap();
        c.send(&"over a stream").unwrap();
    });
    let (s, _) = std_listener.accept().unwrap();
    let conn = Connection::from_fd(OwnedFd::from(s)).unwrap();
    conn.deliver_challenge(b"k", Some(LIVENESS)).unwrap();
    conn.answer_challenge(b"k", Some(LIVENESS)).unwrap();
    assert_eq!(conn.recv::<String>().unwrap(), "over a stream");
    client.join().unwrap();
    assert!(conn.as_fd().try_clone_to_owned().is_ok());
    std::fs::remove_file(path).unwrap();
}

#[test]
fn listeners_and_connections_are_send_and_the_listener_is_sync() {
    fn send<T: Send>() {}
    fn sync<T: Sync>() {}
    send::<Connection>();
    send::<Listener>();
    sync::<Listener>();
    send::<Address>();
    sync::<Address>();
}
