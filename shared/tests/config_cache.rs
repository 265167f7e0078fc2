//! The configuration cache on a real Redis: the many jobs that find a workspace missing or
//! stale at once share one read of it.

mod common;

use futures::future::join_all;
use herald_shared::store::ConfigCache;

use common::TestStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_that_find_a_workspace_stale_at_once_share_one_load() {
    // Arrange
    let t = TestStore::new().await;
    let ws = t
        .store
        .create_workspace("acme")
        .await
        .expect("workspace")
        .workspace
        .id;
    let cache = ConfigCache::new(t.store.clone());

    // Act: 200 jobs ask at once for a workspace not cached yet, then again after a change.
    let ask = || join_all((0..200).map(|_| cache.workspace(&ws)));
    let first = ask().await;
    cache.invalidate();
    let second = ask().await;

    // Assert
    assert!(first
        .iter()
        .chain(&second)
        .all(|c| c.as_ref().is_ok_and(|c| c.exists)));
    assert_eq!(cache.loads(), 2, "one load each time, not one a job");
}
