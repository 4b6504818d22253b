//! The PostgreSQL side of the harness: a fresh database per test, on a
//! reachable server or on a private cluster started with initdb (as root too).

use trackhrs_harness::TestDb;

async fn roundtrip(db: &TestDb) {
    let client = db.connect().await.unwrap();
    client
        .batch_execute("CREATE TABLE t (id int primary key); INSERT INTO t VALUES (1), (2)")
        .await
        .unwrap();
    let row = client
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 2);
    let name: String = client
        .query_one("SELECT current_database()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(name, db.name());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_test_gets_its_own_database() {
    let a = TestDb::create().await.unwrap();
    let b = TestDb::create().await.unwrap();
    assert_ne!(a.name(), b.name());
    roundtrip(&a).await;
    roundtrip(&b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_cluster_starts_when_asked_even_as_root() {
    let db = TestDb::create_private().await.unwrap();
    roundtrip(&db).await;
}
