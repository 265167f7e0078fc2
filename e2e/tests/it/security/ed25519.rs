//! Asymmetric signatures (`v1a`, Ed25519): Herald generates the key pair, shows only the
//! public key, and every request verifies with an Ed25519 implementation other than the one
//! Herald signs with (`ring`'s), through rotations and a switch of schemes.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use herald_e2e::{Received, Receiver, Stack};
use serde_json::{json, Value};

/// Verifies every `v1a` signature of the request made by `public_key` (`whpk_...`) with
/// `ring`, and says whether one did.
fn v1a_verifies(public_key: &str, r: &Received) -> bool {
    let key = STANDARD
        .decode(public_key.strip_prefix("whpk_").expect("whpk_ prefix"))
        .expect("base64 key");
    let header = |n: &str| r.headers[n].to_str().expect("ascii header").to_string();
    let signed = [
        header("webhook-id").as_bytes(),
        b".",
        header("webhook-timestamp").as_bytes(),
        b".",
        &r.body,
    ]
    .concat();
    let verifier = ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, key);
    header("webhook-signature")
        .split(' ')
        .filter_map(|s| s.strip_prefix("v1a,"))
        .filter_map(|b64| STANDARD.decode(b64).ok())
        .any(|sig| verifier.verify(&signed, &sig).is_ok())
}

fn versions(r: &Received) -> Vec<String> {
    r.headers["webhook-signature"]
        .to_str()
        .expect("ascii")
        .split(' ')
        .map(|s| s.split(',').next().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ed25519_connections_sign_v1a_verifiable_with_the_public_key_alone() {
    // Arrange: an Ed25519 connection, its private key sealed at rest.
    let key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let stack = Stack::start_with(&[("HERALD_SECRETS_KEY", key)]).await;
    let receiver = Receiver::start().await;
    let (ws, sk, pk) = stack.workspace().await;
    let (status, created) = stack
        .call(
            "POST",
            "/v1/connections",
            &sk,
            Some(json!({"name": "bank", "url": receiver.url("ed"), "signature_scheme": "ed25519"})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    assert!(created.get("secret").is_none(), "{created}");
    assert_eq!(created["signature_scheme"], "ed25519", "{created}");
    let first = created["public_key"]
        .as_str()
        .expect("public key")
        .to_string();
    assert!(first.starts_with("whpk_"), "{first}");
    let con = created["id"].as_str().expect("id").to_string();
    let (_, secret) = stack
        .call("GET", &format!("/v1/connections/{con}/secret"), &sk, None)
        .await;
    assert_eq!(secret["public_key"], first.as_str(), "{secret}");
    assert!(secret.get("secret").is_none(), "{secret}");
    stack.rule(&sk, "*", "*", &con).await;

    // Act and assert: one v1a signature, verified by ring with the public key.
    let uuid = stack
        .send(&pk, "order.completed", "order", json!({"n": 1}))
        .await;
    let got = receiver.wait_for("ed", 1).await;
    assert_eq!(versions(&got[0]), ["v1a"]);
    assert!(v1a_verifies(&first, &got[0]), "v1a must verify");
    let other = STANDARD.encode([7u8; 32]);
    assert!(!v1a_verifies(&format!("whpk_{other}"), &got[0]));

    // The history shows the signature masked, and Redis holds the private key sealed.
    let h = stack
        .event_when(&sk, &uuid, "delivered", |b| b["status"] == "delivered")
        .await;
    let headers = &h["deliveries"][0]["attempts"][0]["request_headers"];
    assert_eq!(headers["webhook-signature"], "v1a,********", "{headers}");
    let stored = stored_connection(&stack.prefix, &ws, &con).await;
    assert!(
        stored["secret"]
            .as_str()
            .is_some_and(|s| s.starts_with("enc:v1:")),
        "{stored}"
    );

    // A rotation: both keys sign through the grace period.
    let (status, rotated) = stack
        .call(
            "POST",
            &format!("/v1/connections/{con}/rotate-secret"),
            &sk,
            None,
        )
        .await;
    assert_eq!(status, 200, "{rotated}");
    assert!(rotated.get("secret").is_none(), "{rotated}");
    let second = rotated["public_key"].as_str().expect("new key").to_string();
    assert_ne!(second, first);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    stack
        .send(&pk, "order.completed", "order", json!({"n": 2}))
        .await;
    let got = receiver.wait_for("ed", 2).await;
    assert_eq!(versions(&got[1]), ["v1a", "v1a"]);
    assert!(v1a_verifies(&first, &got[1]) && v1a_verifies(&second, &got[1]));
    let (_, secret) = stack
        .call("GET", &format!("/v1/connections/{con}/secret"), &sk, None)
        .await;
    assert_eq!(secret["public_key"], second.as_str(), "{secret}");
    assert_eq!(
        secret["previous_secrets"][0]["public_key"],
        first.as_str(),
        "{secret}"
    );

    // Switching back to HMAC is a rotation too: a v1 and the v1a signatures meanwhile.
    let (status, switched) = stack
        .call(
            "POST",
            &format!("/v1/connections/{con}/rotate-secret"),
            &sk,
            Some(json!({"signature_scheme": "hmac_sha256"})),
        )
        .await;
    assert_eq!(status, 200, "{switched}");
    let whsec = switched["secret"].as_str().expect("whsec").to_string();
    assert!(switched.get("public_key").is_none(), "{switched}");
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let uuid = stack
        .send(&pk, "order.completed", "order", json!({"n": 3}))
        .await;
    let got = receiver.wait_for("ed", 3).await;
    assert_eq!(versions(&got[2]), ["v1", "v1a", "v1a"]);
    herald_e2e::verify(&whsec, &got[2]);
    assert!(v1a_verifies(&second, &got[2]));
    let h = stack
        .event_when(&sk, &uuid, "delivered", |b| b["status"] == "delivered")
        .await;
    let headers = &h["deliveries"][0]["attempts"][0]["request_headers"];
    assert_eq!(
        headers["webhook-signature"], "v1,******** v1a,******** v1a,********",
        "{headers}"
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_ed25519_key_is_never_taken_from_the_caller() {
    let stack = Stack::start().await;
    let (_, sk, _) = stack.workspace().await;
    let (status, body) = stack
        .call(
            "POST",
            "/v1/connections",
            &sk,
            Some(
                json!({"name": "n", "url": "https://example.com/h", "signature_scheme": "ed25519",
                        "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}),
            ),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["field"], "secret", "{body}");
    // A switch by PATCH is a rotation: the old HMAC secret still signs meanwhile.
    let (con, whsec) = stack
        .connection(&sk, "https://example.com/h", json!({}))
        .await;
    let (status, body) = stack
        .call(
            "PATCH",
            &format!("/v1/connections/{con}"),
            &sk,
            Some(json!({"signature_scheme": "ed25519"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["signature_scheme"], "ed25519", "{body}");
    assert!(body["public_key"]
        .as_str()
        .is_some_and(|k| k.starts_with("whpk_")));
    let (_, secret) = stack
        .call("GET", &format!("/v1/connections/{con}/secret"), &sk, None)
        .await;
    assert_eq!(
        secret["previous_secrets"][0]["secret"],
        whsec.as_str(),
        "{secret}"
    );
    stack.stop().await;
}

async fn stored_connection(prefix: &str, ws: &str, con: &str) -> Value {
    let client = redis::Client::open("redis://127.0.0.1:6379").expect("client");
    let mut c = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let stored: String = redis::cmd("HGET")
        .arg(format!("{prefix}:ws:{{{ws}}}:conns"))
        .arg(con)
        .query_async(&mut c)
        .await
        .expect("stored connection");
    serde_json::from_str(&stored).expect("json")
}
