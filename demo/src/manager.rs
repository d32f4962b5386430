//! The tour's manager section: the seed's `Manager` and `Namespace` experiments (children
//! fill a shared dict; a producer sets a namespace attribute that a consumer waits for), the
//! increment that Python's managers race on, a client on another "host" over TCP with an
//! authkey, and what a proxy says when its server is killed. Section 19: a custom type served
//! to a second binary, built apart, over TCP.

use ipc_core::process::{Builder, JoinHandle};
use ipc_manager::{Dict, Error, Event, Manager, Namespace};

use crate::{Res, conclude, nap, say, section};

/// The seed's worker: `d[i] = i * 2`.
fn fill((d, i): (Dict<u32, u32>, u32)) {
    d.insert(i, i * 2).expect("the manager is up");
}

/// The namespace producer: sets the value, then the event.
fn producer((ns, ready, epoch): (Namespace, Event, u64)) {
    nap(100);
    ns.set("value", "This is the value").expect("set");
    say(epoch, "producer set ns.value and the event");
    ready.set().expect("set");
}

/// The namespace consumer: waits for the event, then reads the value.
fn consumer((ns, ready, epoch): (Namespace, Event, u64)) {
    say(epoch, "consumer waits for the event");
    ready.wait().expect("wait");
    let v: String = ns.get("value").expect("get");
    say(epoch, format!("consumer read ns.value = {v:?}"));
}

/// `d["hits"] += 1`, 250 times, as one step on the server each time.
fn increment(d: Dict<String, u64>) {
    for _ in 0..250 {
        d.fetch_add("hits".into(), 1).expect("fetch_add");
    }
}

/// A program that knows only the address and the key: looks the dict up and adds to it.
fn remote_client((address, key, epoch): (String, Vec<u8>, u64)) -> Result<u64, String> {
    let m = Manager::connect(&address.parse().map_err(|e| format!("{e}"))?, &key)
        .map_err(|e| e.to_string())?;
    let scores: Dict<String, u64> = m.lookup("scores").map_err(|e| e.to_string())?;
    say(
        epoch,
        format!("connected to {address}; found the published dict"),
    );
    scores
        .fetch_add("remote".into(), 40)
        .map_err(|e| e.to_string())
}

fn named<A, R>(name: &str, arg: A, f: fn(A) -> R) -> Res<JoinHandle<R>>
where
    A: serde::Serialize + serde::de::DeserializeOwned,
    R: serde::Serialize + serde::de::DeserializeOwned,
{
    Ok(Builder::new().name(name).spawn(arg, f)?)
}

/// Section 18.
pub(crate) fn run(epoch: u64) -> Res {
    section(
        18,
        "A Manager's server process holds a dict and a Namespace for every process",
    );
    let m = Manager::start()?;
    say(
        epoch,
        format!(
            "manager started: server pid {} at {}",
            m.server_pid(),
            m.address()
        ),
    );
    let d = m.dict::<u32, u32>()?;
    let workers = (0..10)
        .map(|i| named(&format!("filler-{i}"), (d.clone(), i), fill))
        .collect::<Res<Vec<_>>>()?;
    for w in workers {
        w.join()?;
    }
    let mut items = d.items()?;
    items.sort();
    say(epoch, format!("results: {items:?}"));

    let ns = m.namespace()?;
    let ready = m.event()?;
    let c = named("consumer", (ns.clone(), ready.clone(), epoch), consumer)?;
    let p = named("producer", (ns.clone(), ready.clone(), epoch), producer)?;
    p.join()?;
    c.join()?;
    say(epoch, format!("the namespace prints as {ns}"));

    let counter = m.dict::<String, u64>()?;
    let racers = (0..4)
        .map(|i| named(&format!("incrementer-{i}"), counter.clone(), increment))
        .collect::<Res<Vec<_>>>()?;
    for r in racers {
        r.join()?;
    }
    say(
        epoch,
        format!(
            "4 processes x 250 fetch_add(1) = {} (Python's d[k] += 1 races)",
            counter.get("hits")?.unwrap_or(0)
        ),
    );
    conclude(
        "proxies passed as arguments reach the same objects from every child, without the \
         authkey in their bytes; read-modify-write runs on the server, under the object's lock",
    );

    let tcp = Manager::builder()
        .address("127.0.0.1:0".parse()?)
        .authkey(b"demo secret".to_vec())
        .start()?;
    let scores = tcp.dict::<String, u64>()?;
    scores.insert("remote".into(), 2)?;
    tcp.publish("scores", &scores)?;
    say(epoch, format!("a TCP manager listens at {}", tcp.address()));
    let right = named(
        "remote-client",
        (tcp.address().to_string(), b"demo secret".to_vec(), epoch),
        remote_client,
    )?
    .join()?;
    say(
        epoch,
        format!(
            "the client with the key added 40 to {}: scores[\"remote\"] = {}",
            right?,
            scores.get("remote")?.unwrap_or(0)
        ),
    );
    let wrong = named(
        "wrong-key",
        (tcp.address().to_string(), b"guess".to_vec(), epoch),
        remote_client,
    )?
    .join()?;
    say(
        epoch,
        format!("a client with a wrong key: {}", wrong.unwrap_err()),
    );
    tcp.shutdown()?;

    let pid = m.server_pid();
    let _ = rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid as i32).ok_or("a pid")?,
        rustix::process::Signal::KILL,
    );
    nap(50);
    match d.get(&1) {
        Err(e @ Error::ServerGone(_)) => say(epoch, format!("server killed; a proxy call: {e}")),
        other => say(epoch, format!("server killed; a proxy call: {other:?}")),
    }
    drop(m);
    conclude(
        "over TCP only a client with the authkey is served (the handshake authenticates, it \
         does not encrypt); a dead server is an error at once, never a hang",
    );
    Ok(())
}

/// Section 19.
pub(crate) fn custom(epoch: u64) -> Res {
    section(
        19,
        "A custom type on the manager's server, called by a second program over TCP",
    );
    let client = std::env::current_exe()?.with_file_name("tally-client");
    if !client.exists() {
        return Err(format!(
            "{} is missing: build it with `cargo build -p demo --bins` (cargo xtask demo does)",
            client.display()
        )
        .into());
    }
    let key = b"demo tally key".to_vec();
    let m = Manager::builder()
        .address("127.0.0.1:0".parse()?)
        .authkey(key.clone())
        .register::<demo::Tally>()
        .start()?;
    let tally = m.create(&demo::Tally::new("shared"))?;
    tally.add(10)?;
    m.publish("tally", &tally)?;
    let totals = m.dict::<String, i64>()?;
    m.publish("totals", &totals)?;
    say(
        epoch,
        format!(
            "the server (pid {}) holds a Tally at {}; running {}",
            m.server_pid(),
            m.address(),
            client.display()
        ),
    );
    let out = std::process::Command::new(&client)
        .args([m.address().to_string(), demo::hex(&key)])
        .output()?;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        println!("    {line}");
    }
    if !out.status.success() {
        return Err(format!(
            "tally-client failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    say(
        epoch,
        format!(
            "back in the demo: tally.total() = {} (10 here + 5 from the other program)",
            tally.total()?
        ),
    );
    m.shutdown()?;
    conclude(
        "#[served] on an impl block writes the server side and the proxy; methods travel by \
         name and version, so a separately built program calls them, a method the server lacks \
         is an error, and a method can hand out new shared objects (nested proxies)",
    );
    Ok(())
}
