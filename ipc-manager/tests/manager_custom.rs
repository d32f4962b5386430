//! Custom types (checklist 109): a user's type held by the server, its methods called by name
//! and version through the proxy `#[served]` writes, from the owner and from children under
//! every start method. The cross-binary case (a client built as another executable, over TCP)
//! is in the demo crate's tests, which has the second binary.

use ipc_core::process::{Builder, StartMethod};
use ipc_manager::{Context, Error, List, Manager, Ref, served};
use serde::{Deserialize, Serialize};

mod common;
use common::{LONG, under_each};

/// A tally of amounts, with a log list it keeps on the server.
#[derive(Default, Serialize, Deserialize)]
pub struct Tally {
    label: String,
    amounts: Vec<i64>,
    #[serde(skip)]
    log: Option<Ref<List<String>>>,
}

#[served]
impl Tally {
    /// Adds `amount`; the new total.
    pub fn add(&mut self, amount: i64) -> i64 {
        self.amounts.push(amount);
        self.amounts.iter().sum()
    }

    /// The total (version 2: an `i64`).
    #[served(version = 2)]
    pub fn total(&self) -> i64 {
        self.amounts.iter().sum()
    }

    /// The total as version 1 said it: an `i32`.
    #[served(name = "total", version = 1)]
    pub fn total_v1(&self) -> i32 {
        self.amounts.iter().sum::<i64>() as i32
    }

    /// The amounts so far, as a new list on the server.
    pub fn history(&self, cx: &mut Context) -> ipc_manager::Result<Ref<List<i64>>> {
        cx.list(self.amounts.clone())
    }

    /// The tally's own log list (made on first use, kept in the state).
    pub fn log(&mut self, cx: &mut Context) -> ipc_manager::Result<Ref<List<String>>> {
        if self.log.is_none() {
            self.log = Some(cx.list([format!("log of {}", self.label)])?);
        }
        Ok(self.log.clone().expect("made above"))
    }

    /// A borrowed parameter travels as its owned form.
    pub fn relabel(&mut self, label: &str) -> String {
        std::mem::replace(&mut self.label, label.to_string())
    }

    /// A method that fails its own way: the error is the method's own type.
    pub fn checked_add(&mut self, amount: i64) -> Result<i64, String> {
        if amount < 0 {
            return Err(format!("{amount} is negative"));
        }
        Ok(self.add(amount))
    }

    /// A bug on the server: a panic is an error for the caller, the server lives on.
    pub fn explode(&self) {
        panic!("the tally exploded");
    }

    #[served(expose)]
    fn secret(&self) -> usize {
        self.amounts.len()
    }

    /// Not served.
    #[served(skip)]
    pub fn local_only(&self) -> usize {
        0
    }
}

/// A newer build of the same type, as another client might know it: it has a method the
/// server's build lacks.
#[derive(Serialize, Deserialize)]
pub struct NewerTally;

#[served(name = "Tally", proxy = NewerTallyProxy)]
impl NewerTally {
    /// Not on the server.
    pub fn reset(&mut self) {}
    /// On the server in version 1 and 2, not 3.
    #[served(version = 3)]
    pub fn total(&self) -> u64 {
        0
    }
}

fn manager(method: StartMethod) -> Manager {
    Manager::builder()
        .start_method(method)
        .register::<Tally>()
        .start()
        .unwrap()
}

fn add_from_child((t, n): (TallyProxy, i64)) -> i64 {
    t.add(n).unwrap();
    t.log().unwrap().push(format!("child added {n}")).unwrap();
    t.history().unwrap().len().unwrap() as i64
}

fn scenario(method: StartMethod) {
    let m = manager(method);
    let baseline = m.stats().unwrap().objects;
    let t = m
        .create(&Tally {
            label: "main".into(),
            ..Tally::default()
        })
        .unwrap();
    assert_eq!(t.add(5).unwrap(), 5);
    assert_eq!(t.checked_add(2).unwrap(), Ok(7));
    assert_eq!(
        t.checked_add(-1).unwrap(),
        Err("-1 is negative".to_string())
    );
    assert_eq!(t.total().unwrap(), 7);
    assert_eq!(t.total_v1().unwrap(), 7);
    assert_eq!(t.secret().unwrap(), 2);
    assert_eq!(t.relabel("renamed").unwrap(), "main");

    // A nested proxy: a list the method made, then the one the state keeps.
    let history = t.history().unwrap();
    assert_eq!(history.to_vec().unwrap(), [5, 2]);
    let log = t.log().unwrap();
    assert_eq!(log.to_vec().unwrap(), ["log of renamed"]);

    // From children: the proxy travels, the log list is the same object for everyone.
    let children: Vec<_> = (1..=3)
        .map(|n| {
            Builder::new()
                .start_method(method)
                .spawn((t.clone(), n), add_from_child)
                .unwrap()
        })
        .collect();
    for c in children {
        let reap = common::Reap(&c);
        c.join_timeout(LONG).unwrap();
        drop(reap);
        assert!(c.join().unwrap() >= 3);
    }
    assert_eq!(t.total().unwrap(), 13);
    assert_eq!(log.len().unwrap(), 4);

    // Failures are typed errors and the server carries on.
    assert!(matches!(t.explode(), Err(Error::Function(msg)) if msg.contains("exploded")));
    assert_eq!(t.total().unwrap(), 13);
    m.publish("tally", &t).unwrap();
    let newer: NewerTallyProxy = m.lookup("tally").unwrap();
    match newer.reset() {
        Err(Error::NoSuchMethod { kind, op }) => {
            assert_eq!(kind, "Tally");
            assert!(op.contains("reset"), "{op}");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        newer.total(),
        Err(Error::NoSuchMethod { op, .. }) if op.contains("version 3")
    ));
    let not_a_dict: Result<ipc_manager::Dict<u8, u8>, _> = m.lookup("tally");
    assert!(matches!(not_a_dict, Err(Error::WrongKind { .. })));

    // Every holder gone: the tally, its log, the history list are freed.
    m.unpublish("tally").unwrap();
    drop((t, newer, history, log));
    assert!(
        common::eventually(|| m.stats().unwrap().objects == baseline),
        "{:?}",
        m.stats()
    );
    m.shutdown().unwrap();
}

#[test]
fn a_custom_type_is_served_under_every_start_method() {
    under_each(scenario);
}

#[test]
fn a_type_the_server_does_not_know_is_a_typed_error() {
    let m = Manager::start().unwrap();
    match m.create(&NewerTally) {
        Err(Error::NoSuchType(name)) => assert_eq!(name, "Tally"),
        other => panic!("{other:?}"),
    }
    m.shutdown().unwrap();
}

#[test]
fn a_standalone_server_serves_the_types_registered_in_its_process() {
    ipc_manager::register::<Tally>();
    let server = ipc_manager::Server::bind(&"127.0.0.1:0".parse().unwrap(), b"key").unwrap();
    let address = server.address().clone();
    let serving = std::thread::spawn(move || server.serve());
    let m = Manager::connect(&address, b"key").unwrap();
    let t = m.create(&Tally::default()).unwrap();
    assert_eq!(t.add(40).unwrap() + t.add(2).unwrap(), 82);
    assert_eq!(t.history().unwrap().to_vec().unwrap(), [40, 2]);
    m.shutdown().unwrap();
    serving.join().unwrap().unwrap();
}
