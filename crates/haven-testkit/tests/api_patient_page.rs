//! The patient's side through the HTTP API on both backends: the secure page (no PHI before
//! the identity check, lockout), the patient's thread (read, reply, texts back), the shared
//! inbox, and what a number change does to consent.

use haven_domain::roles::Role;
use haven_testkit::both_backends;
use haven_testkit::clinic::{PATIENT_PHONE, clinic, link_token};
use serde_json::json;

both_backends!(
    a_secure_link_shows_no_phi_before_identity_and_locks_after_five_wrong_checks,
    |b| async move {
        let mut c = clinic(b).await;
        let (st, _) = c.text_patient(json!({"purpose": "care"})).await;
        assert_eq!(st, 202);
        c.drain().await;
        let token = link_token(&c);
        let page = format!("/p/{token}");
        for _ in 0..2 {
            // Opened twice (a link-preview bot, then the patient): nothing is used up, nothing shown.
            let (st, h, html) = c.page("GET", &page, &[], false).await;
            assert_eq!(st, 200, "{html}");
            assert!(html.contains("Lakeside Clinic") && html.contains("Text me a code"), "{html}");
            for phi in ["Ada", "Quill", "MRN-1", "1961", "Follow-up", PATIENT_PHONE] {
                assert!(!html.contains(phi), "no PHI before identity is proven: {html}");
            }
            assert_eq!(h["referrer-policy"], "no-referrer");
            assert_eq!(h["cache-control"], "no-store");
            let csp = h["content-security-policy"].to_str().unwrap();
            assert!(
                csp.contains("default-src 'none'")
                    && !csp.contains("unsafe-inline")
                    && !csp.contains("script-src"),
                "{csp}"
            );
            assert!(!html.contains("<script"), "no script at all");
        }
        assert_eq!(c.page("GET", "/p/AAAAAAAAAAAAAAAAAAAAAA", &[], false).await.0, 404);
        // A cross-site post is refused, however its Origin reads; a browser's same-origin post
        // (Origin `null` under `no-referrer`, Sec-Fetch-Site `same-origin`) is the patient's.
        assert_eq!(c.page("POST", &format!("{page}/code"), &[], false).await.0, 403);
        let post = |site: &'static str| {
            c.s.client
                .post(c.s.url(&format!("{page}/code")))
                .header("Origin", "null")
                .header("Sec-Fetch-Site", site)
                .send()
        };
        assert_eq!(post("cross-site").await.unwrap().status(), 403);
        assert_eq!(post("same-site").await.unwrap().status(), 403);
        let (st, _, html) = c.page("POST", &format!("{page}/code"), &[], true).await;
        assert_eq!(st, 200, "{html}");
        assert!(html.contains("Date of birth"));
        // A second code within the minute is refused.
        assert_eq!(c.page("POST", &format!("{page}/code"), &[], true).await.0, 429);
        c.drain().await;
        let code = c.last_code();
        assert_eq!(
            c.twilio.messages().last().unwrap().to,
            PATIENT_PHONE,
            "the code goes to the phone on record"
        );
        for left in (1..=4).rev() {
            let (st, _, html) = c
                .page("POST", &format!("{page}/verify"), &[("dob", "1961-04-10"), ("code", &code)], true)
                .await;
            assert_eq!(st, 422, "{html}");
            assert!(html.contains(&format!("Attempts left: {left}")), "{html}");
        }
        let (st, _, html) =
            c.page("POST", &format!("{page}/verify"), &[("dob", "1961-04-10"), ("code", &code)], true).await;
        assert_eq!(st, 403);
        assert!(
            html.contains("locked") && html.contains("+15550100200"),
            "a clear message and whom to call: {html}"
        );
        // Locked means locked, even with the right answers.
        let (st, h, html) =
            c.page("POST", &format!("{page}/verify"), &[("dob", "1961-04-09"), ("code", &code)], true).await;
        assert_eq!(st, 403, "{html}");
        assert!(h.get("set-cookie").is_none());

        // A new link: the right date of birth and code open a short, cookie-bound session once.
        c.after(25 * 3600).await;
        let (st, _) = c.text_patient(json!({"purpose": "care"})).await;
        assert_eq!(st, 202);
        c.drain().await;
        let page = format!("/p/{}", link_token(&c));
        assert_eq!(c.page("POST", &format!("{page}/code"), &[], true).await.0, 200);
        c.drain().await;
        let code = c.last_code();
        let (st, _, html) = c
            .page("POST", &format!("{page}/verify"), &[("dob", "1961-04-09"), ("code", "000000")], true)
            .await;
        assert_eq!(st, 422, "a wrong code fails like a wrong date: {html}");
        let (st, h, html) =
            c.page("POST", &format!("{page}/verify"), &[("dob", "1961-04-09"), ("code", &code)], true).await;
        assert_eq!(st, 200, "{html}");
        assert!(html.contains("Identity confirmed"));
        let cookie = h["set-cookie"].to_str().unwrap();
        assert!(
            cookie.starts_with("haven_patient=")
                && cookie.contains("HttpOnly")
                && cookie.contains("SameSite=Strict")
                && cookie.contains("Path=/p"),
            "{cookie}"
        );
        let session = cookie.split(';').next().unwrap().trim_start_matches("haven_patient=");
        assert!(c.s.app.patient_session(session).await.is_ok());
        let (_, _, html) = c.page("GET", &page, &[], false).await;
        assert!(html.contains("already used"), "single use once identity is proven: {html}");
        // The session ends after five idle minutes.
        c.s.clock.advance_secs(6 * 60);
        assert!(c.s.app.patient_session(session).await.is_err());

        // Every open and every check is audited, failures included.
        let auditor = c.s.user(c.org, "auditor", &[Role::ComplianceOfficer]).await;
        let auditor = c.s.login(&auditor).await;
        let (_, failed) =
            c.s.get("/api/v1/audit/events?action=identity-check&outcome=failure&limit=50", Some(&auditor))
                .await;
        assert_eq!(
            failed["events"].as_array().unwrap().len(),
            6,
            "five on the first link (the retry once locked is refused before any check) and one on the second: {failed}"
        );
        let (_, opened) = c.s.get("/api/v1/audit/events?action=link-open&limit=50", Some(&auditor)).await;
        assert!(opened["events"].as_array().unwrap().len() >= 3);
        c.s.stop().await;
    }
);

both_backends!(the_patient_reads_and_replies_on_the_secure_page_and_by_text, |b| async move {
    let c = clinic(b).await;
    let secret = "Your potassium came back normal at 4.1";
    let (st, t) = c.text_patient(json!({"purpose": "care", "body": secret})).await;
    assert_eq!(st, 202, "{t}");
    c.drain().await;
    let sms = c.twilio.messages().last().unwrap().body.clone();
    assert!(
        !sms.contains("potassium") && sms.contains("/p/"),
        "the SMS carries a link, not the message: {sms}"
    );
    // Staff see it in the conversation, in order, as a message to the patient.
    let events = c.events().await;
    let sent =
        events.iter().find(|e| e["type"] == "patient_message").expect("the message is in the conversation");
    assert_eq!(sent["patient_message"]["direction"], "to_patient");
    assert_eq!(sent["patient_message"]["body"], secret);
    assert_eq!(sent["actor_id"], json!(c.nurse.id));

    let (page, session) = c.open_newest_link().await;
    let (st, _, html) = c.page_as("GET", &page, &[], false, Some(&session)).await;
    assert_eq!(st, 200);
    assert!(html.contains(secret) && html.contains("Your messages"), "{html}");
    // Replies need the same site, the session, and some text.
    let reply = format!("{page}/reply");
    assert_eq!(c.page_as("POST", &reply, &[("body", "hi")], false, Some(&session)).await.0, 403);
    let (st, _, html) = c.page_as("POST", &reply, &[("body", "hi")], true, None).await;
    assert_eq!(st, 401);
    assert!(html.contains("session has ended"), "{html}");
    let (st, _, html) = c.page_as("POST", &reply, &[("body", "   ")], true, Some(&session)).await;
    assert_eq!(st, 422, "{html}");
    let (st, _, html) = c
        .page_as(
            "POST",
            &reply,
            &[("body", "Thank you <b>doctor</b>, see you Tuesday")],
            true,
            Some(&session),
        )
        .await;
    assert_eq!(st, 200, "{html}");
    assert!(
        html.contains("Your reply was sent.")
            && html.contains("Thank you &lt;b&gt;doctor&lt;")
            && !html.contains("<b>doctor"),
        "{html}"
    );

    // The reply reaches the conversation, counts as unread, and opens the shared inbox entry.
    let events = c.events().await;
    let got = events.last().unwrap();
    assert_eq!(
        (got["type"].as_str(), got["patient_message"]["direction"].as_str()),
        (Some("patient_message"), Some("from_patient"))
    );
    assert_eq!(got["patient_message"]["channel"], "secure_page");
    assert!(got.get("actor_id").is_none(), "written by the patient, not by a user: {got}");
    let (_, list) = c.s.get("/api/v1/conversations", Some(&c.staff)).await;
    assert_eq!(list["conversations"][0]["unread"], 1, "{list}");
    let (st, inbox) = c.s.get("/api/v1/inbox?status=open", Some(&c.staff)).await;
    assert_eq!(st, 200, "{inbox}");
    assert_eq!(inbox[0]["conversation_id"], json!(c.conv));
    assert_eq!(inbox[0]["patient"]["name"], "Ada Quill");
    let path = format!("/api/v1/inbox/{}", c.conv);
    let (st, e) = c.s.put(&path, Some(&c.staff), json!({"assignee_id": c.patient, "status": "open"})).await;
    assert_eq!((st, e["code"].as_str()), (422, Some("unknown_user")), "{e}");
    let (st, item) =
        c.s.put(&path, Some(&c.staff), json!({"assignee_id": c.nurse.id, "status": "done"})).await;
    assert_eq!((st, item["status"].as_str()), (200, Some("done")), "{item}");
    assert_eq!(item["assignee_id"], json!(c.nurse.id));
    assert_eq!(c.s.get("/api/v1/inbox?status=open", Some(&c.staff)).await.1, json!([]));

    // A text from the patient joins the thread and opens the entry again.
    let (st, _) = c.inbound("SM-reply-1", PATIENT_PHONE, "Running 10 minutes late").await;
    assert_eq!(st, 200);
    let events = c.events().await;
    let texted = &events.last().unwrap()["patient_message"];
    assert_eq!(
        (texted["body"].as_str(), texted["channel"].as_str()),
        (Some("Running 10 minutes late"), Some("sms"))
    );
    let (_, inbox) = c.s.get("/api/v1/inbox?status=open", Some(&c.staff)).await;
    assert_eq!(inbox.as_array().unwrap().len(), 1);
    // The replayed webhook adds nothing.
    c.inbound("SM-reply-1", PATIENT_PHONE, "Running 10 minutes late").await;
    assert_eq!(c.events().await.len(), events.len());
    let (_, _, html) = c.page_as("GET", &page, &[], false, Some(&session)).await;
    assert!(html.contains("Running 10 minutes late") && html.contains("(by text)"), "{html}");

    // Audited, without bodies.
    let auditor = c.s.user(c.org, "auditor", &[Role::ComplianceOfficer]).await;
    let auditor = c.s.login(&auditor).await;
    for action in [
        "patient-message-send",
        "patient-thread-read",
        "patient-message-receive",
        "inbox-read",
        "inbox-update",
    ] {
        let (_, found) = c.s.get(&format!("/api/v1/audit/events?action={action}"), Some(&auditor)).await;
        assert!(!found["events"].as_array().unwrap().is_empty(), "{action} is audited");
    }
    let (_, all) = c.s.get("/api/v1/audit/events?limit=500", Some(&auditor)).await;
    let all = all.to_string();
    assert!(
        !all.contains("potassium") && !all.contains("Tuesday") && !all.contains("late"),
        "no bodies in the audit log"
    );
    c.s.stop().await;
});

both_backends!(a_message_to_an_opted_out_patient_is_not_stored_at_all, |b| async move {
    let c = clinic(b).await;
    let (st, _) = c.inbound("SM-stop", PATIENT_PHONE, "STOP").await;
    assert_eq!(st, 200);
    let before = c.events().await.len();
    let (st, e) = c.text_patient(json!({"purpose": "care", "body": "Your results are in"})).await;
    assert_eq!((st, e["code"].as_str()), (409, Some("patient_opted_out")), "{e}");
    assert_eq!(c.events().await.len(), before, "no message without its text: nothing half-written");
    let (st, e) = c.text_patient(json!({"purpose": "care", "body": ""})).await;
    assert_eq!(st, 422, "{e}");
    c.s.stop().await;
});

both_backends!(a_number_change_ends_consent_for_the_old_number, |b| async move {
    let c = clinic(b).await;
    let (st, _) = c.text_patient(json!({"purpose": "care", "body": "Lab results are ready"})).await;
    assert_eq!(st, 202);
    let patient = format!("/api/v1/patients/{}/phone", c.patient);
    let (st, e) = c.s.put(&patient, Some(&c.staff), json!({"phone": "555-12"})).await;
    assert_eq!((st, e["code"].as_str()), (422, Some("invalid_phone")), "{e}");
    let (st, p) = c.s.put(&patient, Some(&c.staff), json!({"phone": "+15551230002"})).await;
    assert_eq!((st, p["phone"].as_str()), (200, Some("+15551230002")), "{p}");
    // The text queued for the old number never goes out.
    c.drain().await;
    assert!(c.twilio.messages().is_empty(), "nothing to the old number after the change");
    assert_eq!(c.texts().await[0]["status"], "cancelled");
    // The new number has no consent until it is recorded.
    assert_eq!(c.consent().await["allowed"], json!([]));
    let (st, e) = c.text_patient(json!({"purpose": "care"})).await;
    assert_eq!((st, e["code"].as_str()), (409, Some("no_consent")), "{e}");
    // The ledger keeps why: the old number's consent ended, per purpose, as a number change.
    let officer = c.s.user(c.org, "compliance", &[Role::ComplianceOfficer]).await;
    let officer = c.s.login(&officer).await;
    let (st, bundle) = c.s.get("/api/v1/consent/export", Some(&officer)).await;
    assert_eq!(st, 200, "{bundle}");
    let text = bundle.to_string();
    assert!(text.contains("number changed"), "{text}");
    // The same number again changes nothing; other organisations' patients are not found.
    let (st, _) = c.s.put(&patient, Some(&c.staff), json!({"phone": "+15551230002"})).await;
    assert_eq!(st, 200);
    let other = c.s.org("Elsewhere").await;
    let stranger = c.s.enrolled_user(other, "nurse.z", &[Role::Nurse]).await;
    let stranger = c.s.login(&stranger).await;
    assert_eq!(c.s.put(&patient, Some(&stranger), json!({"phone": "+15551230003"})).await.0, 404);
    c.s.stop().await;
});
