//! A PostgreSQL database of a test's own for the archive ([`TestDb`]), on the machine's
//! PostgreSQL (`HERALD_TEST_PG_URL`, default `postgres://postgres@127.0.0.1:5432`), dropped by
//! [`TestDb::drop_db`].

use tokio_postgres::{Client, NoTls};

/// The server the test databases are made on.
pub fn server_url() -> String {
    std::env::var("HERALD_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_string())
}

/// Connects to `url`, the connection served in the background.
pub async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {url}: {e}"));
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// A database made for one test.
pub struct TestDb {
    /// Its name.
    pub name: String,
    /// Its URL, for `HERALD_ARCHIVE_URL`.
    pub url: String,
}

impl TestDb {
    /// Makes a fresh, empty database.
    pub async fn create() -> Self {
        let name = format!(
            "herald_test_{}",
            herald_shared::ids::random_base62(10).to_lowercase()
        );
        let admin = connect(&format!("{}/postgres", server_url())).await;
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create database");
        Self {
            url: format!("{}/{name}", server_url()),
            name,
        }
    }

    /// A connection to it.
    pub async fn client(&self) -> Client {
        connect(&self.url).await
    }

    /// Drops it (connections still open to it are ended).
    pub async fn drop_db(self) {
        let admin = connect(&format!("{}/postgres", server_url())).await;
        let _ = admin
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .await;
    }
}
