//! The PostgreSQL store against a real server started by the harness: the same conformance
//! suite as sled and memory, the schema's versions, reopening, and bad URLs.

use vishwa_integration_tests::postgres;
use vishwa_scheduler::ids::RunId;
use vishwa_scheduler::store::{PostgresStore, Store, WriteBatch};

/// A store on a fresh database of the shared server, opened off the async runtime's
/// threads (opening blocks while it connects), and the database's URL.
fn fresh_store() -> (PostgresStore, String) {
    let url = postgres::shared()
        .fresh_database()
        .expect("creating a database");
    let opened = std::thread::spawn({
        let url = url.clone();
        move || PostgresStore::open(&url)
    })
    .join()
    .expect("open does not panic");
    (opened.expect("opening the store"), url)
}

vishwa_scheduler::store_conformance!(conformance, fresh_store());

#[tokio::test]
async fn records_survive_reopening_the_store() {
    let (store, url) = fresh_store();
    let mut b = WriteBatch::new();
    b.put_dag(vishwa_scheduler::store::DagRecord {
        name: "etl".into(),
        version: "v1".into(),
        submitted_ms: 1,
        paused: false,
    });
    store.commit(b).await.unwrap();
    drop(store);
    let again = std::thread::spawn(move || PostgresStore::open(&url))
        .join()
        .unwrap()
        .unwrap();
    assert_eq!(again.get_dag("etl").unwrap().unwrap().version, "v1");
    assert!(again.get_run(&RunId::from("none")).unwrap().is_none());
}

#[test]
fn a_newer_schema_is_refused_with_a_clear_message() {
    let server = postgres::shared();
    let url = server.fresh_database().unwrap();
    drop(PostgresStore::open(&url).unwrap());
    let db = url.rsplit('/').next().unwrap();
    server
        .sql(db, "INSERT INTO vishwa_schema (version) VALUES (999)")
        .unwrap();
    let e = PostgresStore::open(&url)
        .err()
        .expect("a newer schema is refused");
    let text = e.to_string();
    assert!(text.contains("schema version 999"), "{text}");
    assert!(text.contains("newer than this vishwa knows"), "{text}");
}

#[test]
fn bad_urls_and_unreachable_servers_say_what_and_how_to_fix() {
    let e = PostgresStore::open("postgres://vishwa@127.0.0.1:notaport/db")
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("bad PostgreSQL URL"), "{e}");
    assert!(e.contains("postgres://USER"), "{e}");
    let port = vishwa_integration_tests::net::free_local_addr().port();
    let e = PostgresStore::open(&format!("postgres://vishwa:hunter2@127.0.0.1:{port}/db"))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("cannot connect to PostgreSQL"), "{e}");
    assert!(
        !e.contains("hunter2"),
        "the password stays out of messages: {e}"
    );
}
