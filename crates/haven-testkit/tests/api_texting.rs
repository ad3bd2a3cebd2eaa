//! Patient texting through the HTTP API on both backends: Twilio webhooks signed by Twilio's
//! own Python SDK, STOP/HELP/START with the consent ledger, exactly one confirmation, quiet
//! hours in the patient's zone, caps, the durable outbox across a crash, and the refusals.

use haven_app::Actor;
use haven_domain::org::OrgPolicy;
use haven_domain::roles::Role;
use haven_testkit::both_backends;
use haven_testkit::clinic::{OUR_NUMBER, PATIENT_PHONE, clinic};
use haven_testkit::twilio::{AUTH_TOKEN, sdk_signature};
use serde_json::{Value, json};

both_backends!(stop_is_committed_with_exactly_one_confirmation_and_nothing_else_goes_out, |b| async move {
    let c = clinic(b).await;
    // A reminder queued before the STOP, not yet sent.
    let (st, queued) = c.text_patient(json!({"purpose": "care"})).await;
    assert_eq!(st, 202, "{queued}");

    let (st, twiml) = c.inbound("SM00000000000000000000000000000001", PATIENT_PHONE, "  Stop. ").await;
    assert_eq!(st, 200);
    assert!(twiml.contains("<Response></Response>"), "no inline reply: {twiml}");
    // Committed before the webhook was answered: the ledger shows it at once, with its source.
    let consent = c.consent().await;
    assert_eq!(consent["opted_out"], true, "{consent}");
    assert_eq!(consent["allowed"], json!([]));
    let last = consent["history"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (last["state"].as_str(), last["source"].as_str()),
        (Some("revoked"), Some("sms-keyword")),
        "{last}"
    );

    // The same webhook again (a retry or a replay), and a second STOP: no further effect.
    let (st, _) = c.inbound("SM00000000000000000000000000000001", PATIENT_PHONE, "  Stop. ").await;
    assert_eq!(st, 200);
    let (st, _) = c.inbound("SM00000000000000000000000000000002", PATIENT_PHONE, "STOP").await;
    assert_eq!(st, 200);
    assert_eq!(c.consent().await["history"].as_array().unwrap().len(), 2, "one grant, one opt-out");

    // An attempted reminder is refused; the one queued earlier is cancelled when its turn comes.
    let (st, e) = c.text_patient(json!({"purpose": "care"})).await;
    assert_eq!((st, e["code"].as_str()), (409, Some("patient_opted_out")), "{e}");
    c.drain().await;
    let sent = c.twilio.messages();
    assert_eq!(sent.len(), 1, "exactly one text went out: {sent:?}");
    assert_eq!(sent[0].to, PATIENT_PHONE);
    assert_eq!(sent[0].from, OUR_NUMBER);
    assert!(
        sent[0].body.contains("Lakeside Clinic") && sent[0].body.contains("unsubscribed"),
        "{}",
        sent[0].body
    );
    let texts = c.texts().await;
    let earlier = texts.iter().find(|t| t["id"] == queued["id"]).unwrap();
    assert_eq!(
        (earlier["status"].as_str(), earlier["error_code"].as_str()),
        (Some("cancelled"), Some("opted_out"))
    );
    assert!(texts.iter().any(|t| t["kind"] == "opt-out-confirmation" && t["status"] == "sent"));
    c.s.stop().await;
});

both_backends!(forged_unsigned_and_tampered_webhooks_are_refused_and_audited, |b| async move {
    let c = clinic(b).await;
    let path = format!("/webhooks/twilio/{}/inbound", c.org);
    let params = [
        ("MessageSid", "SM00000000000000000000000000000009"),
        ("From", PATIENT_PHONE),
        ("To", OUR_NUMBER),
        ("Body", "STOP"),
    ];
    // Unsigned.
    let (st, body) = c.webhook(&path, &params, None).await;
    assert_eq!(st, 403, "{body}");
    assert!(body.contains("invalid_signature"), "{body}");
    // Signed with another account's token.
    let forged = sdk_signature("0123456789abcdef0123456789abcdef", &c.s.url(&path), &params);
    assert_eq!(c.webhook(&path, &params, Some(&forged)).await.0, 403);
    // Signed for a harmless body, sent with another.
    let harmless = [params[0], params[1], params[2], ("Body", "Thanks!")];
    let sig = sdk_signature(AUTH_TOKEN, &c.s.url(&path), &harmless);
    assert_eq!(c.webhook(&path, &params, Some(&sig)).await.0, 403);
    // Signed for another organisation's URL.
    let other = sdk_signature(
        AUTH_TOKEN,
        &c.s.url("/webhooks/twilio/00000000-0000-4000-8000-000000000000/inbound"),
        &params,
    );
    assert_eq!(c.webhook(&path, &params, Some(&other)).await.0, 403);
    // A status callback is checked the same way.
    let status_path = format!("/webhooks/twilio/{}/status", c.org);
    assert_eq!(
        c.webhook(&status_path, &[("MessageSid", "SM1"), ("MessageStatus", "delivered")], None).await.0,
        403
    );

    assert_eq!(c.consent().await["opted_out"], false, "nothing was acted on");
    c.drain().await;
    assert!(c.twilio.messages().is_empty());
    let admin = c.s.user(c.org, "auditor", &[Role::ComplianceOfficer]).await;
    let admin = c.s.login(&admin).await;
    let (st, page) =
        c.s.get("/api/v1/audit/events?action=webhook&outcome=serious_failure&limit=50", Some(&admin)).await;
    assert_eq!(st, 200, "{page}");
    let refused = page["events"].as_array().unwrap().iter().filter(|e| e["subtype"] == "webhook").count();
    assert_eq!(refused, 5, "every refused webhook is a security event: {page}");
    c.s.stop().await;
});

both_backends!(help_start_and_look_alike_opt_outs, |b| async move {
    let c = clinic(b).await;
    assert_eq!(c.inbound("SM10000000000000000000000000000001", PATIENT_PHONE, "help").await.0, 200);
    assert_eq!(
        c.inbound("SM10000000000000000000000000000002", PATIENT_PHONE, "Please stop texting me about this")
            .await
            .0,
        200
    );
    assert_eq!(c.consent().await["opted_out"], false, "free text is flagged for staff, not obeyed");
    assert_eq!(c.inbound("SM10000000000000000000000000000003", PATIENT_PHONE, "ALTO").await.0, 200);
    assert_eq!(c.consent().await["opted_out"], true);
    assert_eq!(c.inbound("SM10000000000000000000000000000004", PATIENT_PHONE, "Start").await.0, 200);
    let consent = c.consent().await;
    assert_eq!(
        (consent["opted_out"].as_bool(), consent["allowed"].clone()),
        (Some(false), json!(["care"])),
        "{consent}"
    );
    c.drain().await;
    let bodies: Vec<String> = c.twilio.messages().into_iter().map(|m| m.body).collect();
    assert_eq!(
        bodies.len(),
        3,
        "help reply, opt-out confirmation (in Spanish), opt-in confirmation: {bodies:?}"
    );
    let help = bodies.iter().find(|b| b.contains("Help:")).expect("a HELP reply");
    assert!(
        help.contains("+15550100200") && help.contains("STOP") && help.contains("Lakeside Clinic"),
        "{help}"
    );
    assert!(bodies.iter().any(|b| b.contains("cancelada")), "ALTO is answered in Spanish: {bodies:?}");
    assert!(bodies.iter().any(|b| b.contains("again")));
    c.s.stop().await;
});

both_backends!(
    a_text_queued_at_ten_pm_patient_time_goes_out_at_eight_and_caps_hold_the_next,
    |b| async move {
        let mut c = clinic(b).await;
        // 22:00 in New York on Monday 2 November (EST).
        c.at("2026-11-03T03:00:00Z").await;
        let (st, t) = c.text_patient(json!({"purpose": "care"})).await;
        assert_eq!(st, 202, "{t}");
        assert_eq!(t["not_before"], "2026-11-03T13:00:00Z", "08:00 EST the next morning");
        c.drain().await;
        c.s.clock.set("2026-11-03T12:59:59Z".parse().unwrap());
        c.drain().await;
        assert!(c.twilio.messages().is_empty(), "nothing before 08:00");
        c.at("2026-11-03T13:00:00Z").await;
        c.drain().await;
        let sent = c.twilio.messages();
        assert_eq!(sent.len(), 1);
        let body = &sent[0].body;
        assert!(body.contains(&format!("{}/p/", c.s.base)) && body.contains("STOP"), "{body}");
        for phi in ["Ada", "Quill", "MRN-1", "1961", "Follow-up"] {
            assert!(!body.contains(phi), "the SMS carries no PHI: {body}");
        }
        let token = body.split("/p/").nth(1).unwrap().split_whitespace().next().unwrap();
        assert!(
            data_encoding::BASE64URL_NOPAD.decode(token.as_bytes()).unwrap().len() >= 16,
            "a 128-bit token"
        );
        // One a day: the next care text waits 24 hours from the first.
        let (st, t2) = c.text_patient(json!({"purpose": "care"})).await;
        assert_eq!(st, 202, "{t2}");
        assert_eq!(t2["not_before"], "2026-11-04T13:00:00Z");
        // Urgent texts skip quiet hours but not caps or consent.
        let (st, e) = c.text_patient(json!({"purpose": "lab-results", "urgent": true})).await;
        assert_eq!((st, e["code"].as_str()), (409, Some("no_consent")), "{e}");
        c.s.stop().await;
    }
);

both_backends!(
    a_crash_between_queueing_and_sending_or_after_handing_over_sends_exactly_once,
    |b| async move {
        let mut c = clinic(b).await;
        let (st, _) = c.text_patient(json!({"purpose": "care"})).await;
        assert_eq!(st, 202);
        // The node that queued it dies before its worker runs; another node (or the restarted one)
        // finds it in the durable outbox.
        let restarted = c.s.another_app().await;
        while restarted.outbox_pass().await.unwrap().claimed > 0 {}
        assert_eq!(c.twilio.messages().len(), 1);
        c.drain().await;
        assert_eq!(c.twilio.messages().len(), 1, "never twice");

        // Twilio accepts the next text but the answer is lost: the text is looked up, not resent.
        c.after(25 * 3600).await;
        c.twilio.lose_next_answers(1);
        let (st, t) = c.text_patient(json!({"purpose": "care"})).await;
        assert_eq!(st, 202, "{t}");
        c.drain().await;
        assert_eq!(c.twilio.messages().len(), 2);
        let pending = c.texts().await.into_iter().find(|x| x["id"] == t["id"]).unwrap();
        assert_eq!(pending["status"], "sending", "{pending}");
        c.after(120).await;
        c.drain().await;
        assert_eq!(c.twilio.messages().len(), 2, "found at Twilio, not sent again");
        let done = c.texts().await.into_iter().find(|x| x["id"] == t["id"]).unwrap();
        assert_eq!(done["status"], "sent", "{done}");

        // An outage is retried with backoff.
        c.after(25 * 3600).await;
        c.twilio.fail_next(1);
        let (_, t) = c.text_patient(json!({"purpose": "care"})).await;
        c.drain().await;
        assert_eq!(c.twilio.messages().len(), 2);
        let retry = c.texts().await.into_iter().find(|x| x["id"] == t["id"]).unwrap();
        assert_eq!(
            (retry["status"].as_str(), retry["attempts"].as_u64()),
            (Some("queued"), Some(1)),
            "{retry}"
        );
        c.after(31).await;
        c.drain().await;
        assert_eq!(c.twilio.messages().len(), 3);
        // Delivery reports (signed) move the text on.
        let sid = c.twilio.messages()[2].sid.clone();
        let path = format!("/webhooks/twilio/{}/status", c.org);
        let params = [("MessageSid", sid.as_str()), ("MessageStatus", "delivered")];
        let sig = sdk_signature(AUTH_TOKEN, &c.s.url(&path), &params);
        assert_eq!(c.webhook(&path, &params, Some(&sig)).await.0, 204);
        assert_eq!(c.texts().await.into_iter().find(|x| x["id"] == t["id"]).unwrap()["status"], "delivered");
        c.s.stop().await;
    }
);

both_backends!(the_consent_ledger_keeps_evidence_refuses_bad_input_and_exports_fhir, |b| async move {
    let c = clinic(b).await;
    // A web-form consent waits for YES (double opt-in).
    let (st, o) =
        c.s.post(
            &format!("/api/v1/patients/{}/consent", c.patient),
            Some(&c.staff),
            json!({
            "purposes": ["appointment-reminder"], "state": "granted", "source": "web-form",
            "wording": "Text me appointment reminders."}),
        )
        .await;
    assert_eq!(st, 201, "{o}");
    assert_eq!(o["pending"], json!(["appointment-reminder"]));
    c.drain().await;
    assert!(c.twilio.messages()[0].body.contains("YES"));
    assert_eq!(c.inbound("SM20000000000000000000000000000001", PATIENT_PHONE, "Yes").await.0, 200);
    let o = c.consent().await;
    assert_eq!(o["allowed"], json!(["care", "appointment-reminder"]), "{o}");
    // An opt-out given by telephone, recorded by staff.
    let (st, o) =
        c.s.post(
            &format!("/api/v1/patients/{}/consent", c.patient),
            Some(&c.staff),
            json!({
            "state": "revoked", "source": "phone", "wording": "Patient called: no more texts."}),
        )
        .await;
    assert_eq!(st, 201, "{o}");
    assert_eq!(o["opted_out"], true);
    let last = o["history"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["source"], "phone");
    assert!(last["recorded_by"].is_string());
    // Refusals: no wording, a keyword source claimed by staff, a PHI placeholder in a template.
    let (st, e) =
        c.s.post(
            &format!("/api/v1/patients/{}/consent", c.patient),
            Some(&c.staff),
            json!({"state": "granted", "source": "front-desk", "wording": " "}),
        )
        .await;
    assert_eq!((st, e["code"].as_str()), (422, Some("invalid_wording")));
    let (st, e) =
        c.s.post(
            &format!("/api/v1/patients/{}/consent", c.patient),
            Some(&c.staff),
            json!({"state": "granted", "source": "sms-keyword", "wording": "x"}),
        )
        .await;
    assert_eq!((st, e["code"].as_str()), (422, Some("invalid_source")));
    let admin = c.s.user(c.org, "admin2", &[Role::OrgAdmin, Role::ComplianceOfficer]).await;
    let admin = c.s.login(&admin).await;
    let (st, e) =
        c.s.put(
            "/api/v1/organization/sms-templates/en",
            Some(&admin),
            json!({"body": "Hi {{ patient_name }}, see {{ link }} STOP to end"}),
        )
        .await;
    assert_eq!((st, e["code"].as_str()), (422, Some("phi_placeholder")));
    let (st, _) =
        c.s.put(
            "/api/v1/organization/sms-templates/es",
            Some(&admin),
            json!({"body": "{{ org_name }}: mensaje nuevo en {{ link }} ALTO para cancelar"}),
        )
        .await;
    assert_eq!(st, 204);
    // The ledger is append-only in the database itself.
    let pool = sqlx::AnyPool::connect(c.s.db.url()).await.unwrap();
    assert!(sqlx::query("UPDATE consent_ledger SET state = 'granted'").execute(&pool).await.is_err());
    assert!(sqlx::query("DELETE FROM consent_ledger").execute(&pool).await.is_err());
    pool.close().await;
    // FHIR export (compliance).
    let (st, bundle) = c.s.get("/api/v1/consent/export?limit=2", Some(&admin)).await;
    assert_eq!(st, 200, "{bundle}");
    assert_eq!(bundle["resourceType"], "Bundle");
    assert_eq!(bundle["entry"].as_array().unwrap().len(), 2);
    assert_eq!(bundle["link"][0]["relation"], "next");
    let (_, all) = c.s.get("/api/v1/consent/export", Some(&admin)).await;
    let resources: Vec<&Value> = all["entry"].as_array().unwrap().iter().map(|e| &e["resource"]).collect();
    assert_eq!(resources.len(), 4, "front-desk grant, web-form pending, YES, phone opt-out: {all}");
    let phone_out = resources.last().unwrap();
    assert_eq!(
        (phone_out["status"].as_str(), phone_out["provision"]["type"].as_str()),
        (Some("rejected"), Some("deny"))
    );
    let wording = data_encoding::BASE64
        .decode(phone_out["sourceAttachment"]["data"].as_str().unwrap().as_bytes())
        .unwrap();
    assert_eq!(wording, b"Patient called: no more texts.");
    assert!(!all.to_string().contains(PATIENT_PHONE), "numbers stay sealed");
    // Staff without the audit permission cannot export; another organisation sees nothing.
    assert_eq!(c.s.get("/api/v1/consent/export", Some(&c.staff)).await.0, 404);
    let other = c.s.org("Elsewhere").await;
    c.s.app
        .set_policy(&Actor::Operator, other, OrgPolicy { mfa_required: false, ..OrgPolicy::default() })
        .await
        .unwrap();
    let stranger = c.s.user(other, "stranger", &[Role::Nurse]).await;
    let stranger = c.s.login(&stranger).await;
    assert_eq!(c.s.get(&format!("/api/v1/patients/{}/consent", c.patient), Some(&stranger)).await.0, 404);
    assert_eq!(
        c.s.post(&format!("/api/v1/conversations/{}/patient-texts", c.conv), Some(&stranger), json!({}))
            .await
            .0,
        404
    );
    c.s.stop().await;
});

both_backends!(regional_windows_narrow_quiet_hours_and_unknown_regions_get_the_strictest, |b| async move {
    let mut c = clinic(b).await;
    // Monday 20:30 in New York: inside the default window (to 21:00), past Florida's 20:00.
    c.at("2026-11-03T01:30:00Z").await;
    let (st, e) = c
        .s
        .post(
            "/api/v1/patients",
            Some(&c.staff),
            json!({"mrn": "MRN-BAD", "name": "Bad Region", "date_of_birth": "1970-01-01", "region": "Florida"}),
        )
        .await;
    assert_eq!((st, e["code"].as_str()), (422, Some("invalid_region")), "{e}");
    for (n, region, expected) in [
        (11, Some("us-fl"), "2026-11-03T13:00:00Z"),
        (12, Some("US-NY"), "2026-11-03T01:30:00Z"),
        (13, None, "2026-11-03T13:00:00Z"),
    ] {
        let phone = format!("+155512300{n}");
        let (st, p) =
            c.s.post(
                "/api/v1/patients",
                Some(&c.staff),
                json!({"mrn": format!("MRN-{n}"), "name": "Region Test", "date_of_birth": "1970-01-01",
                       "phone": phone, "time_zone": "America/New_York", "region": region}),
            )
            .await;
        assert_eq!(st, 201, "{p}");
        let id = p["id"].as_str().unwrap();
        let (st, _) = c
            .s
            .post(&format!("/api/v1/patients/{id}/consent"), Some(&c.staff), json!({
                "purposes": ["care"], "state": "granted", "source": "front-desk", "wording": "May we text you?"}))
            .await;
        assert_eq!(st, 201);
        let (_, conv) =
            c.s.post(
                "/api/v1/conversations",
                Some(&c.staff),
                json!({"kind": "patient", "members": [], "patient_id": id}),
            )
            .await;
        let (st, t) =
            c.s.post(
                &format!("/api/v1/conversations/{}/patient-texts", conv["id"].as_str().unwrap()),
                Some(&c.staff),
                json!({"purpose": "care"}),
            )
            .await;
        assert_eq!(st, 202, "{t}");
        assert_eq!(t["not_before"], expected, "region {region:?}");
    }
    c.s.stop().await;
});

both_backends!(a_scheduled_text_waits_for_its_time_and_then_for_the_window, |b| async move {
    let mut c = clinic(b).await;
    // Scheduled for 21:30 in New York (after the window closes): out at 08:00 the next morning.
    let (st, t) = c.text_patient(json!({"purpose": "care", "send_at": "2026-11-03T02:30:00Z"})).await;
    assert_eq!(st, 202, "{t}");
    assert_eq!(t["not_before"], "2026-11-03T13:00:00Z");
    c.drain().await;
    c.s.clock.set("2026-11-03T12:59:59Z".parse().unwrap());
    c.drain().await;
    assert!(c.twilio.messages().is_empty(), "nothing before its time");
    c.at("2026-11-03T13:00:00Z").await;
    c.drain().await;
    assert_eq!(c.twilio.messages().len(), 1);
    // Not a time, or more than 30 days ahead: refused, and nothing is queued.
    for bad in ["tomorrow morning", "2026-12-04T13:00:01Z"] {
        let (st, e) = c.text_patient(json!({"purpose": "care", "send_at": bad})).await;
        assert_eq!((st, e["code"].as_str()), (422, Some("invalid_send_at")), "{bad}: {e}");
    }
    assert_eq!(c.texts().await.len(), 1);
    // A time already past means now (caps still apply: one care text a day).
    let (st, t) = c.text_patient(json!({"purpose": "care", "send_at": "2026-11-01T00:00:00Z"})).await;
    assert_eq!(st, 202, "{t}");
    assert_eq!(t["not_before"], "2026-11-04T13:00:00Z");
    c.s.stop().await;
});

both_backends!(two_nodes_draining_one_outbox_take_each_text_once, |b| async move {
    // Both nodes read the due text; the lease is a compare-and-set, so only one takes it.
    let c = clinic(b).await;
    let (st, t) = c.text_patient(json!({"purpose": "care"})).await;
    assert_eq!(st, 202, "{t}");
    let other = c.s.another_app().await;
    let (one, two) = tokio::join!(c.s.app.outbox_pass(), other.outbox_pass());
    // On SQLite the later writer may instead be refused its stale read (and tries again next
    // pass); either way the text is taken once.
    let claimed: usize = [one, two].iter().filter_map(|r| r.as_ref().ok()).map(|p| p.claimed).sum();
    assert_eq!(claimed, 1);
    c.drain().await;
    assert_eq!(c.twilio.messages().len(), 1, "sent once");
    let sent = c.texts().await.into_iter().find(|x| x["id"] == t["id"]).unwrap();
    assert_eq!(sent["status"], "sent", "{sent}");
    c.s.stop().await;
});

both_backends!(the_outbox_worker_sends_queued_texts_once_and_stops_when_told, |b| async move {
    // The worker as `haven serve` runs it: two lanes, each a pass at a time, until stopped.
    let c = clinic(b).await;
    let (st, t) = c.text_patient(json!({"purpose": "care"})).await;
    assert_eq!(st, 202, "{t}");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let app = c.s.app.clone();
    let worker = tokio::spawn(async move {
        app.run_outbox(async {
            let _ = stopped.await;
        })
        .await
    });
    let mut status = Value::Null;
    for _ in 0..200 {
        status = c.texts().await.into_iter().find(|x| x["id"] == t["id"]).unwrap()["status"].clone();
        if status == "sent" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(status, "sent");
    // Both lanes keep looking (every second at the latest); the text is not sent again.
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    assert_eq!(c.twilio.messages().len(), 1, "sent once");
    stop.send(()).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(5), worker)
        .await
        .expect("both lanes end once stopped")
        .unwrap();
    c.s.stop().await;
});
