//! Master-key rotation on both backends: after re-wrapping, a server holding only the new key
//! reads everything written under the old one, and a server holding only the old key cannot.

use std::sync::{Arc, Mutex};

use haven_app::{App, AppSettings, Keys, OsEntropy, RequestMeta};
use haven_crypto::password::Argon2Cost;
use haven_crypto::seal::MasterKey;
use haven_domain::roles::Role;
use haven_store::{Store, StoreOptions};
use haven_testkit::{Backend, TestServer, both_backends};
use serde_json::json;

async fn app_with(s: &TestServer, masters: &[u8]) -> App {
    let store = Store::open(s.db.url(), &StoreOptions::default()).await.unwrap();
    let keys = Keys {
        masters: masters
            .iter()
            .map(|b| (u32::from(*b), MasterKey::from_bytes(if *b == 1 { [7; 32] } else { [*b; 32] })))
            .collect(),
        audit_signer: haven_testkit::test_keys().audit_signer,
    };
    let settings = AppSettings {
        argon2: Argon2Cost { memory_kib: 1024, iterations: 1, parallelism: 1 },
        ..AppSettings::default()
    };
    let entropy: Arc<Mutex<dyn haven_domain::Entropy + Send>> = Arc::new(Mutex::new(OsEntropy));
    App::new(store, keys, s.db.blobs(), settings, Arc::new(s.clock.clone()), entropy).unwrap()
}

both_backends!(rotation_rewraps_everything_and_retires_nothing_readable, |b: Backend| async move {
    // The test server runs with master key version 1 ([7; 32]).
    let s = TestServer::start(b).await;
    let org = s.org("Riverside").await;
    let alice = s.enrolled_user(org, "alice", &[Role::Clinician]).await;
    let bob = s.enrolled_user(org, "bob", &[Role::Nurse]).await;
    let a = s.login(&alice).await;
    let (_, c) =
        s.post("/api/v1/conversations", Some(&a), json!({"kind": "direct", "members": [bob.id]})).await;
    let conv: haven_domain::ConversationId = c["id"].as_str().unwrap().parse().unwrap();
    let (st, _) = s
        .post(
            &format!("/api/v1/conversations/{conv}/messages"),
            Some(&a),
            json!({"idempotency_key": "k", "body": "before rotation"}),
        )
        .await;
    assert_eq!(st, 201);

    // Rotate: version 2 becomes current.
    let both = app_with(&s, &[1, 2]).await;
    let report = both.rewrap_all(&|_, _| {}).await.unwrap();
    assert_eq!((report.version, report.org_keys, report.totp_secrets), (2, 1, 2));
    assert_eq!(both.rewrap_all(&|_, _| {}).await.unwrap().org_keys, 0, "idempotent");
    let status = both.key_status().await.unwrap();
    assert_eq!(status.org_keys_by_version.into_iter().collect::<Vec<_>>(), [(2, 1)]);

    // Only the new key: everything still reads, and TOTP secrets open (a re-run re-seals none).
    let new_only = app_with(&s, &[2]).await;
    let p = new_only.authenticate(&a, &RequestMeta::default()).await.unwrap();
    let events = new_only.events(&p, conv, haven_app::messaging::EventRange::After(0), 10).await.unwrap();
    assert_eq!(events[1].message.as_ref().unwrap().body.as_deref(), Some("before rotation"));
    assert_eq!(new_only.rewrap_all(&|_, _| {}).await.unwrap().totp_secrets, 0);

    // A server started before the rotation, with only version 1 loaded, re-reads its key
    // source when it meets version 2, and keeps serving.
    struct Rotated;
    impl haven_crypto::envelope::KeyProvider for Rotated {
        fn master_keys(&self) -> Result<Vec<(u32, MasterKey)>, haven_crypto::CryptoError> {
            Ok(vec![(1, MasterKey::from_bytes([7; 32])), (2, MasterKey::from_bytes([2; 32]))])
        }
    }
    let running = app_with(&s, &[1]).await.with_key_provider(Arc::new(Rotated));
    let p = running.authenticate(&a, &RequestMeta::default()).await.unwrap();
    assert!(running.events(&p, conv, haven_app::messaging::EventRange::After(0), 10).await.is_ok());

    // Only the old key: the organisation key no longer opens.
    let old_only = app_with(&s, &[1]).await;
    let p = old_only.authenticate(&a, &RequestMeta::default()).await.unwrap();
    assert!(old_only.events(&p, conv, haven_app::messaging::EventRange::After(0), 10).await.is_err());

    // Rotations are in the audit trail.
    let audit = s.app.store().recent_audit(org, 100).await.unwrap();
    assert_eq!(audit.iter().filter(|e| e.record.subtype == "org-key-rewrap").count(), 1);
    assert_eq!(audit.iter().filter(|e| e.record.subtype == "totp-reseal").count(), 2);
    s.stop().await;
});
