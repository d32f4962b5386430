//! The authentication handshake: an HMAC-SHA256 challenge on a random nonce.
//!
//! One direction (the server runs [`deliver_challenge`], the client [`answer_challenge`]):
//! ```text
//! challenger                                         answerer
//!   "#CHALLENGE#" "{sha256}" nonce(32 random bytes) ->
//!                        <- "{sha256}" HMAC-SHA256(authkey, "{sha256}" nonce)
//!   "#WELCOME#" or "#FAILURE#"                      ->
//! ```
//! Each message is one frame. The MAC covers the digest name as well as the nonce, so a peer
//! cannot talk the answerer into another digest; only `{sha256}` is accepted (Python's legacy
//! unprefixed MD5 replies are refused). The tag is checked in constant time. A
//! [`Listener`](super::Listener) runs both directions (it challenges the client, then the client
//! challenges it), so each side proves it knows the key.
//!
//! Frames read during the handshake are limited to [`HANDSHAKE_MAX_MESSAGE`] bytes and the whole
//! exchange to a deadline, so a peer that sends garbage, a huge length, or nothing at all gets an
//! error, not a hang. Any handshake failure leaves the connection in an unknown state: drop it.
//!
//! [`deliver_challenge`]: Connection::deliver_challenge
//! [`answer_challenge`]: Connection::answer_challenge

use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::connection::Connection;
use crate::error::{Error, Result};

const CHALLENGE: &[u8] = b"#CHALLENGE#";
const WELCOME: &[u8] = b"#WELCOME#";
const FAILURE: &[u8] = b"#FAILURE#";
const DIGEST: &[u8] = b"{sha256}";
const NONCE_LEN: usize = 32;

/// The largest frame accepted during the handshake (every honest message is under 64 bytes).
pub const HANDSHAKE_MAX_MESSAGE: u64 = 256;

/// How long a [`Listener`](super::Listener) or [`connect`](super::connect) gives the peer to
/// complete the handshake: generous on a loaded machine. (A listener runs its clients'
/// handshakes concurrently, so a silent peer delays nobody; this only bounds how long its
/// socket is kept.)
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(20);

type HmacSha256 = Hmac<Sha256>;

fn mac(authkey: &[u8], message: &[u8]) -> Result<HmacSha256> {
    // HMAC takes keys of any length (an empty key included); the error cannot happen.
    let mut m = HmacSha256::new_from_slice(authkey)
        .map_err(|_| Error::Authentication("the HMAC refused the authkey".into()))?;
    m.update(message);
    Ok(m)
}

/// Receives one handshake message, turning every way a peer can misbehave into a clear error.
pub(super) fn recv_step(
    conn: &Connection,
    deadline: Option<Instant>,
    waiting_for: &str,
) -> Result<Vec<u8>> {
    match conn.recv_frame(deadline, HANDSHAKE_MAX_MESSAGE) {
        Ok((bytes, fds)) if fds.is_empty() => Ok(bytes),
        Ok(_) => Err(Error::Authentication(format!(
            "the peer sent file descriptors instead of {waiting_for}"
        ))),
        Err(Error::Eof) => Err(Error::Authentication(format!(
            "the peer closed the connection instead of sending {waiting_for}"
        ))),
        Err(e @ (Error::MessageTooLarge { .. } | Error::Malformed(_) | Error::Misuse(_))) => Err(
            Error::Authentication(format!("the peer does not speak the handshake: {e}")),
        ),
        Err(e) => Err(e),
    }
}

/// Sends one handshake message; a peer that already hung up is a failed handshake.
fn send_step(conn: &Connection, message: &[u8]) -> Result<()> {
    match conn.send_bytes(message) {
        Err(Error::Io(e))
            if matches!(
                e.kind(),
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
            ) =>
        {
            Err(Error::Authentication(
                "the peer closed the connection during the handshake".into(),
            ))
        }
        other => other,
    }
}

fn show(bytes: &[u8]) -> String {
    let shown: String = bytes
        .iter()
        .take(32)
        .map(|b| b.escape_ascii().to_string())
        .collect();
    if bytes.len() > 32 {
        format!("\"{shown}...\" ({} bytes)", bytes.len())
    } else {
        format!("\"{shown}\"")
    }
}

/// A challenge message: the marker, the digest name and a fresh random nonce.
pub(super) type Challenge = [u8; CHALLENGE.len() + DIGEST.len() + NONCE_LEN];

/// Challenger, step 1: sends a fresh challenge; returns it, to judge the answer against.
pub(super) fn send_challenge(conn: &Connection) -> Result<Challenge> {
    let mut message = [0u8; CHALLENGE.len() + DIGEST.len() + NONCE_LEN];
    message[..CHALLENGE.len()].copy_from_slice(CHALLENGE);
    message[CHALLENGE.len()..CHALLENGE.len() + DIGEST.len()].copy_from_slice(DIGEST);
    getrandom::fill(&mut message[CHALLENGE.len() + DIGEST.len()..]).map_err(|e| {
        Error::Io(std::io::Error::other(format!(
            "no random bytes for the challenge: {e}"
        )))
    })?;
    send_step(conn, &message)?;
    Ok(message)
}

/// Challenger, step 2: checks the peer's `answer` to `challenge` and tells the peer the verdict.
pub(super) fn judge_answer(
    conn: &Connection,
    authkey: &[u8],
    challenge: &Challenge,
    answer: &[u8],
) -> Result<()> {
    let signed = &challenge[CHALLENGE.len()..];
    let verified = match answer.strip_prefix(DIGEST) {
        Some(tag) => mac(authkey, signed)?.verify_slice(tag).is_ok(),
        None => false,
    };
    if verified {
        return send_step(conn, WELCOME);
    }
    // Tell the peer why we hang up; if that fails too, the verdict is the same.
    let _ = conn.send_bytes(FAILURE);
    Err(Error::Authentication(if answer.starts_with(DIGEST) {
        "the peer's answer to our challenge is wrong (a different authkey?)".into()
    } else {
        format!(
            "the peer answered {} instead of a {{sha256}} digest",
            show(answer)
        )
    }))
}

/// Answerer, step 1: checks the peer's `challenge` and sends the HMAC of it.
pub(super) fn send_answer(conn: &Connection, authkey: &[u8], challenge: &[u8]) -> Result<()> {
    let Some(signed) = challenge.strip_prefix(CHALLENGE) else {
        return Err(Error::Authentication(format!(
            "expected a challenge, got {} (does the peer expect an authkey?)",
            show(challenge)
        )));
    };
    let Some(nonce) = signed.strip_prefix(DIGEST) else {
        return Err(Error::Authentication(format!(
            "the challenge asks for {}; only {{sha256}} is supported",
            show(signed)
        )));
    };
    if nonce.len() < NONCE_LEN {
        return Err(Error::Authentication(format!(
            "the challenge nonce is {} bytes; at least {NONCE_LEN} are required",
            nonce.len()
        )));
    }
    let tag = mac(authkey, signed)?.finalize().into_bytes();
    let mut answer = Vec::with_capacity(DIGEST.len() + tag.len());
    answer.extend_from_slice(DIGEST);
    answer.extend_from_slice(&tag);
    send_step(conn, &answer)
}

/// Answerer, step 2: the peer's verdict on our answer.
pub(super) fn read_verdict(verdict: &[u8]) -> Result<()> {
    if verdict == WELCOME {
        Ok(())
    } else if verdict == FAILURE {
        Err(Error::Authentication(
            "the peer rejected our answer (a different authkey?)".into(),
        ))
    } else {
        Err(Error::Authentication(format!(
            "expected a verdict, got {}",
            show(verdict)
        )))
    }
}

impl Connection {
    /// Challenges the peer to prove it knows `authkey` (the server side of one direction;
    /// Python's `deliver_challenge`).
    ///
    /// Sends a random nonce, checks the peer's HMAC-SHA256 of it, and tells the peer the
    /// verdict. A wrong answer is [`Error::Authentication`] here and, through the verdict, in
    /// the peer's [`answer_challenge`](Self::answer_challenge). `timeout` bounds the whole
    /// exchange ([`Error::Timeout`]); `None` waits as long as the peer takes.
    ///
    /// ```
    /// use std::time::Duration;
    /// let (server, client) = ipc_core::conn::pipe().unwrap();
    /// let t = std::thread::spawn(move || client.answer_challenge(b"secret", Some(Duration::from_secs(10))));
    /// server.deliver_challenge(b"secret", Some(Duration::from_secs(10))).unwrap();
    /// t.join().unwrap().unwrap();
    /// ```
    pub fn deliver_challenge(&self, authkey: &[u8], timeout: Option<Duration>) -> Result<()> {
        self.deliver_challenge_until(
            authkey,
            timeout.map(|t| crate::deadline::after(Instant::now(), t)),
        )
    }

    /// Proves to the peer that this side knows `authkey` by answering its challenge (the client
    /// side of one direction; Python's `answer_challenge`).
    ///
    /// A challenge that is malformed, uses another digest than `{sha256}`, or a verdict of
    /// failure is [`Error::Authentication`]. `timeout` bounds the whole exchange.
    pub fn answer_challenge(&self, authkey: &[u8], timeout: Option<Duration>) -> Result<()> {
        self.answer_challenge_until(
            authkey,
            timeout.map(|t| crate::deadline::after(Instant::now(), t)),
        )
    }

    pub(super) fn deliver_challenge_until(
        &self,
        authkey: &[u8],
        deadline: Option<Instant>,
    ) -> Result<()> {
        let challenge = send_challenge(self)?;
        let answer = recv_step(self, deadline, "an answer to the challenge")?;
        judge_answer(self, authkey, &challenge, &answer)
    }

    pub(super) fn answer_challenge_until(
        &self,
        authkey: &[u8],
        deadline: Option<Instant>,
    ) -> Result<()> {
        let challenge = recv_step(self, deadline, "a challenge")?;
        send_answer(self, authkey, &challenge)?;
        let verdict = recv_step(self, deadline, "a verdict")?;
        read_verdict(&verdict)
    }
}
