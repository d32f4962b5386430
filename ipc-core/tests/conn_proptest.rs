//! Property tests: whatever bytes a peer writes (random noise, or frames whose headers lie about
//! their lengths and descriptor counts), the receiving end returns messages or a clear error,
//! never panics and never hangs; the same for the authentication handshake.

mod conn_support;

use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use conn_support::header;
use ipc_core::Error;
use ipc_core::conn::{Connection, pipe};
use proptest::prelude::*;
use serde::{Deserialize, Serialize};

/// Liveness bound for one handshake (the peer in these tests has always closed or answered).
const HANDSHAKE: Option<Duration> = Some(Duration::from_secs(30));

#[derive(Debug, Serialize, Deserialize)]
enum Message {
    Text(String),
    Numbers(Vec<u64>),
    Nested(Option<Box<Message>>, (u8, i32)),
}

/// One chunk a hostile peer writes: raw noise, or a frame header followed by some bytes, with a
/// length that may or may not match them.
#[derive(Debug, Clone)]
enum Chunk {
    Noise(Vec<u8>),
    Frame {
        len: u64,
        nfds: u32,
        payload: Vec<u8>,
    },
}

fn chunk() -> impl Strategy<Value = Chunk> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(Chunk::Noise),
        (
            prop_oneof![
                0u64..64,
                any::<u64>(),
                Just(u64::MAX),
                (1u64 << 20)..(1u64 << 31)
            ],
            prop_oneof![Just(0u32), 0u32..4, any::<u32>()],
            proptest::collection::vec(any::<u8>(), 0..64),
        )
            .prop_map(|(len, nfds, payload)| Chunk::Frame { len, nfds, payload }),
        // An honest frame, so that streams also contain valid messages among the lies.
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(|payload| Chunk::Frame {
            len: payload.len() as u64,
            nfds: 0,
            payload,
        }),
    ]
}

fn bytes_of(chunks: &[Chunk]) -> Vec<Vec<u8>> {
    chunks
        .iter()
        .map(|c| match c {
            Chunk::Noise(b) => b.clone(),
            Chunk::Frame { len, nfds, payload } => [&header(*len, *nfds)[..], payload].concat(),
        })
        .collect()
}

fn is_clear_error(e: &Error) -> bool {
    matches!(
        e,
        Error::Eof
            | Error::Malformed(_)
            | Error::MessageTooLarge { .. }
            | Error::Misuse(_)
            | Error::Decode(_)
    )
}

/// Receives until an error; every error must be a clear one and the loop must end.
fn drain(conn: &Connection, typed: bool) -> Result<(), TestCaseError> {
    // Each successful receive consumes at least a header, so this bound is never reached
    // unless a receive returned without consuming anything.
    for _ in 0..10_000 {
        let res = if typed {
            conn.recv::<Message>().map(drop)
        } else {
            conn.recv_bytes().map(drop)
        };
        match res {
            Ok(()) => continue,
            // A message that does not decode is consumed; the next one may be fine.
            Err(Error::Decode(_)) => continue,
            Err(e) => {
                prop_assert!(is_clear_error(&e), "unexpected error {e:?}");
                return Ok(());
            }
        }
    }
    prop_assert!(false, "receives never reached the end of the stream");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn a_byte_stream_of_lies_yields_messages_or_clear_errors(
        chunks in proptest::collection::vec(chunk(), 0..8),
        small_max in any::<bool>(),
        typed in any::<bool>(),
    ) {
        let (a, mut raw) = UnixStream::pair().unwrap();
        let conn = Connection::from_socket(OwnedFd::from(a));
        if small_max {
            conn.set_max_message_size(32);
        }
        for b in bytes_of(&chunks) {
            raw.write_all(&b).unwrap();
        }
        drop(raw);
        drain(&conn, typed)?;
    }

    #[test]
    fn records_of_lies_yield_messages_or_clear_errors(
        chunks in proptest::collection::vec(chunk(), 0..8),
        typed in any::<bool>(),
    ) {
        let (conn, raw) = conn_support::raw_records();
        for b in bytes_of(&chunks) {
            rustix::net::send(&raw, &b, rustix::net::SendFlags::empty()).unwrap();
        }
        drop(raw);
        drain(&conn, typed)?;
    }

    #[test]
    fn a_pipe_of_lies_yields_messages_or_clear_errors(
        chunks in proptest::collection::vec(chunk(), 0..8),
    ) {
        let (r, w) = rustix::pipe::pipe().unwrap();
        let conn = Connection::from_fd(r).unwrap();
        let mut w = std::fs::File::from(w);
        for b in bytes_of(&chunks) {
            w.write_all(&b).unwrap();
        }
        drop(w);
        drain(&conn, false)?;
    }

    #[test]
    fn arbitrary_answers_never_pass_the_challenge(
        answer in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..80),
            proptest::collection::vec(any::<u8>(), 32..33)
                .prop_map(|tag| [&b"{sha256}"[..], &tag].concat()),
        ],
        key in proptest::collection::vec(any::<u8>(), 0..16),
    ) {
        let (server, client) = pipe().unwrap();
        // The answer is queued before the challenge goes out; the server reads it after sending.
        client.send_bytes(&answer).unwrap();
        let res = server.deliver_challenge(&key, HANDSHAKE);
        prop_assert!(matches!(res, Err(Error::Authentication(_))), "{res:?}");
        // The peer got the challenge, then was told.
        let challenge = client.recv_bytes().unwrap();
        prop_assert!(challenge.starts_with(b"#CHALLENGE#{sha256}"), "{:?}", challenge);
        prop_assert_eq!(client.recv_bytes().unwrap(), b"#FAILURE#".to_vec());
    }

    #[test]
    fn arbitrary_challenges_and_verdicts_never_authenticate(
        challenge in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..80),
            proptest::collection::vec(any::<u8>(), 0..48)
                .prop_map(|n| [&b"#CHALLENGE#{sha256}"[..], &n].concat()),
        ],
        verdict in proptest::collection::vec(any::<u8>(), 0..16),
        hang_up in any::<bool>(),
    ) {
        let (client, server) = pipe().unwrap();
        server.send_bytes(&challenge).unwrap();
        if hang_up {
            drop(server);
            let res = client.answer_challenge(b"k", HANDSHAKE);
            prop_assert!(matches!(res, Err(Error::Authentication(_))), "{res:?}");
        } else {
            let verdict_ok = verdict == b"#WELCOME#";
            server.send_bytes(&verdict).unwrap();
            let res = client.answer_challenge(b"k", HANDSHAKE);
            prop_assert!(verdict_ok || matches!(res, Err(Error::Authentication(_))), "{res:?}");
        }
    }

    #[test]
    fn raw_handshake_frames_with_lying_headers_fail_cleanly(
        chunks in proptest::collection::vec(chunk(), 0..4),
        deliver in any::<bool>(),
    ) {
        let (a, mut raw) = UnixStream::pair().unwrap();
        let conn = Connection::from_socket(OwnedFd::from(a));
        for b in bytes_of(&chunks) {
            raw.write_all(&b).unwrap();
        }
        raw.shutdown(std::net::Shutdown::Write).unwrap();
        let res = if deliver {
            conn.deliver_challenge(b"k", HANDSHAKE)
        } else {
            conn.answer_challenge(b"k", HANDSHAKE)
        };
        prop_assert!(matches!(res, Err(Error::Authentication(_))), "{res:?}");
    }
}
