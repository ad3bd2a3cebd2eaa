//! The audit trail through the API: search scoped to the organisation and audited itself,
//! 404 for other roles, and proofs that verify against the signed checkpoint.

use haven_audit::checkpoint::NoteVerifier;
use haven_audit::merkle::{verify_consistency, verify_inclusion};
use haven_domain::roles::Role;
use haven_testkit::{Backend, TestServer, both_backends};

fn hash(s: &serde_json::Value) -> [u8; 32] {
    data_encoding::HEXLOWER.decode(s.as_str().unwrap().as_bytes()).unwrap().try_into().unwrap()
}

both_backends!(compliance_searches_its_own_organisation_and_the_search_is_audited, |b: Backend| async move {
    let s = TestServer::start(b).await;
    let a = s.org("Riverside").await;
    let z = s.org("Lakeside").await;
    let co = s.enrolled_user(a, "compliance.chen", &[Role::ComplianceOfficer]).await;
    let doc = s.enrolled_user(a, "dr.okafor", &[Role::Clinician]).await;
    let co_z = s.enrolled_user(z, "compliance.z", &[Role::ComplianceOfficer]).await;
    let nurse = s.enrolled_user(a, "nurse.patel", &[Role::Nurse]).await;
    s.login(&doc).await;
    s.post(
        "/api/v1/auth/login",
        None,
        serde_json::json!({"username": "dr.okafor", "password": "wrong one!"}),
    )
    .await;
    let t = s.login(&co).await;

    let (st, body) = s.get(&format!("/api/v1/audit/events?user={}", doc.id), Some(&t)).await;
    assert_eq!(st, 200, "{body}");
    let events = body["events"].as_array().unwrap();
    assert!(events.len() >= 4, "{body}");
    assert!(events.iter().all(|e| e["agent"]["user_id"] == doc.id.to_string()));
    let seqs: Vec<i64> = events.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] > w[1]), "newest first");
    let (_, body) =
        s.get(&format!("/api/v1/audit/events?user={}&outcome=failure&action=login", doc.id), Some(&t)).await;
    let failed = body["events"].as_array().unwrap();
    assert_eq!(failed.len(), 1, "{body}");
    assert_eq!(failed[0]["outcome_code"], "wrong_password");
    // Paging.
    let (_, page1) = s.get("/api/v1/audit/events?limit=2", Some(&t)).await;
    let before = page1["next_before"].as_i64().unwrap();
    let (_, page2) = s.get(&format!("/api/v1/audit/events?limit=2&before={before}"), Some(&t)).await;
    assert!(page2["events"][0]["seq"].as_i64().unwrap() < before);
    // The searches were recorded.
    let (_, searches) = s.get("/api/v1/audit/events?action=audit-search", Some(&t)).await;
    assert!(searches["events"].as_array().unwrap().len() >= 3, "{searches}");
    assert_eq!(searches["events"][0]["agent"]["user_id"], co.id.to_string());
    // Another organisation's officer sees none of it.
    let tz = s.login(&co_z).await;
    let (_, other) = s.get(&format!("/api/v1/audit/events?user={}", doc.id), Some(&tz)).await;
    assert_eq!(other["events"].as_array().unwrap().len(), 0);
    // Other roles get 404 everywhere.
    let tn = s.login(&nurse).await;
    for path in [
        "/api/v1/audit/events",
        "/api/v1/audit/checkpoint",
        "/api/v1/audit/proofs/inclusion?seq=1&size=1",
        "/api/v1/audit/proofs/consistency?first=1&second=2",
    ] {
        assert_eq!(s.get(path, Some(&tn)).await.0, 404, "{path}");
    }
    let (st, body) = s.get("/api/v1/audit/events?from=yesterday", Some(&t)).await;
    assert_eq!((st, body["field"].as_str()), (422, Some("from")));
});

both_backends!(proofs_verify_against_signed_checkpoints, |b: Backend| async move {
    let s = TestServer::start(b).await;
    let a = s.org("Riverside").await;
    let co = s.enrolled_user(a, "compliance.chen", &[Role::ComplianceOfficer]).await;
    let t = s.login(&co).await;
    let (st, first) = s.get("/api/v1/audit/checkpoint", Some(&t)).await;
    assert_eq!(st, 200, "{first}");
    let verifier = NoteVerifier::from_key(first["verifier_key"].as_str().unwrap()).unwrap();
    let cp1 = verifier.verify(first["note"].as_str().unwrap()).unwrap();
    assert_eq!(cp1.size, first["size"].as_u64().unwrap());
    s.login(&co).await;
    let (_, second) = s.get("/api/v1/audit/checkpoint", Some(&t)).await;
    let cp2 = verifier.verify(second["note"].as_str().unwrap()).unwrap();
    assert!(cp2.size > cp1.size);
    let (st, proof) = s
        .get(&format!("/api/v1/audit/proofs/consistency?first={}&second={}", cp1.size, cp2.size), Some(&t))
        .await;
    assert_eq!(st, 200);
    let hashes: Vec<[u8; 32]> = proof["proof"].as_array().unwrap().iter().map(hash).collect();
    assert!(verify_consistency(cp1.size, cp2.size, &hashes, &cp1.root, &cp2.root));
    // Every entry of the organisation is provably in the tree.
    let (_, events) = s.get("/api/v1/audit/events?limit=500", Some(&t)).await;
    for e in events["events"].as_array().unwrap() {
        let seq = e["seq"].as_u64().unwrap();
        if seq > cp2.size {
            continue;
        }
        let (st, p) =
            s.get(&format!("/api/v1/audit/proofs/inclusion?seq={seq}&size={}", cp2.size), Some(&t)).await;
        assert_eq!(st, 200, "{p}");
        let hashes: Vec<[u8; 32]> = p["proof"].as_array().unwrap().iter().map(hash).collect();
        assert!(
            verify_inclusion(seq - 1, cp2.size, &hash(&p["leaf_hash"]), &hashes, &cp2.root),
            "entry {seq}"
        );
    }
    assert_eq!(
        s.get(&format!("/api/v1/audit/proofs/inclusion?seq={}&size={}", cp2.size + 50, cp2.size), Some(&t))
            .await
            .0,
        404
    );
});
