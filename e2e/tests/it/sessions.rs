//! Portal sessions end when they should: a refresh works once, one session or all of a
//! workspace can be revoked, and a session can end itself.

use herald_e2e::Stack;
use serde_json::json;

async fn mint(stack: &Stack, sk: &str) -> String {
    let (status, body) = stack
        .call("POST", "/v1/sessions", sk, Some(json!({"role": "viewer"})))
        .await;
    assert_eq!(status, 201, "{body}");
    body["token"].as_str().expect("token").to_string()
}

async fn works(stack: &Stack, token: &str) -> bool {
    let (status, _) = stack.call("GET", "/v1/sessions/current", token, None).await;
    status == 200
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sessions_refresh_once_and_can_be_revoked_one_or_all() {
    let stack = Stack::start().await;
    let (_, sk, _) = stack.workspace().await;
    let (_, other_sk, _) = stack.workspace().await;

    // A refresh token works once.
    let first = mint(&stack, &sk).await;
    let (status, body) = stack
        .call("POST", "/v1/sessions/refresh", &first, None)
        .await;
    assert_eq!(status, 200, "{body}");
    let refreshed = body["token"].as_str().expect("token").to_string();
    let (status, _) = stack
        .call("POST", "/v1/sessions/refresh", &first, None)
        .await;
    assert_eq!(status, 401, "a second refresh of the same token");
    assert!(works(&stack, &refreshed).await);

    // One session revoked by the workspace's secret key; another workspace cannot.
    let one = mint(&stack, &sk).await;
    let (status, _) = stack
        .call(
            "POST",
            "/v1/sessions/revoke",
            &other_sk,
            Some(json!({"token": one})),
        )
        .await;
    assert_eq!(status, 404, "another workspace's key cannot revoke it");
    assert!(works(&stack, &one).await);
    let (status, _) = stack
        .call(
            "POST",
            "/v1/sessions/revoke",
            &sk,
            Some(json!({"token": one})),
        )
        .await;
    assert_eq!(status, 204);
    assert!(!works(&stack, &one).await);

    // All of a workspace: every session minted until then ends; later ones work.
    let other = mint(&stack, &other_sk).await;
    let (status, _) = stack
        .call(
            "POST",
            "/v1/sessions/revoke",
            &sk,
            Some(json!({"all": true})),
        )
        .await;
    assert_eq!(status, 204);
    assert!(!works(&stack, &refreshed).await);
    assert!(
        works(&stack, &other).await,
        "another workspace's sessions live on"
    );
    let after = mint(&stack, &sk).await;
    assert!(works(&stack, &after).await);

    // A session ends itself.
    let (status, _) = stack
        .call("DELETE", "/v1/sessions/current", &after, None)
        .await;
    assert_eq!(status, 204);
    assert!(!works(&stack, &after).await);
    stack.stop().await;
}
