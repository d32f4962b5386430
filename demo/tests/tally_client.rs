//! A custom type called over TCP from a separately built binary (`tally-client`), with the
//! manager's server started under spawn and under forkserver: methods by name and version,
//! one returning a nested proxy, and a method the server lacks as a typed error.

use std::process::Command;

use ipc_core::process::StartMethod;
use ipc_manager::Manager;

fn run_client(m: &Manager, key: &[u8]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tally-client"))
        .args([m.address().to_string(), demo::hex(key)])
        .output()
        .expect("the client binary runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_separately_built_client_calls_the_type_by_name_over_tcp() {
    for method in [StartMethod::Spawn, StartMethod::ForkServer] {
        let key = b"tally test key".to_vec();
        let m = Manager::builder()
            .start_method(method)
            .address("127.0.0.1:0".parse().unwrap())
            .authkey(key.clone())
            .register::<demo::Tally>()
            .start()
            .unwrap();
        let tally = m.create(&demo::Tally::new("test")).unwrap();
        tally.add(10).unwrap();
        m.publish("tally", &tally).unwrap();
        m.publish("totals", &m.dict::<String, i64>().unwrap())
            .unwrap();
        let objects = m.stats().unwrap().objects;

        let (ok, stdout, stderr) = run_client(&m, &key);
        assert!(ok, "under {method}: {stdout}\n{stderr}");
        for expected in [
            "add(5) -> 15",
            "total() -> 15",
            "history() returned a List proxy (a nested object) holding [10, 5]",
            "created a Tally of its own on the server: total() -> 7",
            "reset(), which the server's build lacks: a Tally has no operation reset (version 1)",
            "an update function of this binary: the update failed on the server",
        ] {
            assert!(
                stdout.contains(expected),
                "under {method}: {expected:?} in\n{stdout}"
            );
        }
        assert_eq!(tally.total().unwrap(), 15);
        // The client is gone: what only it referenced (its tally, the history list) is freed.
        assert!(
            eventually(|| m.stats().unwrap().objects == objects),
            "{:?}",
            m.stats()
        );

        let (ok, _, stderr) = run_client(&m, b"wrong key");
        assert!(!ok);
        assert!(stderr.contains("tally-client: error:"), "{stderr}");
        m.shutdown().unwrap();
    }
}

/// `f` holds within 10 s.
fn eventually(mut f: impl FnMut() -> bool) -> bool {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::time::Instant::now() < until {
        if f() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    f()
}
