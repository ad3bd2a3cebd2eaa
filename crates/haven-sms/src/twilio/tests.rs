use super::*;

fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

/// The example of Twilio's security documentation and of its SDKs' tests.
fn documented() -> (&'static str, &'static str, Vec<(String, String)>) {
    (
        "12345",
        "https://mycompany.com/myapp.php?foo=1&bar=2",
        params(&[
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+14158675309"),
            ("Digits", "1234"),
            ("From", "+14158675309"),
            ("To", "+18005551212"),
        ]),
    )
}

#[test]
fn the_documented_signature_is_reproduced_and_accepted() {
    let (token, url, p) = documented();
    assert_eq!(signature(token, url, &p), "RSOYDt4T1cUTdK1PDd93/VVr8B8=");
    assert!(verify(token, url, &p, "RSOYDt4T1cUTdK1PDd93/VVr8B8="));
}

#[test]
fn any_change_to_url_parameters_token_or_signature_is_refused() {
    let (token, url, p) = documented();
    let sig = signature(token, url, &p);
    let mut changed = p.clone();
    changed[2].1 = "1235".into();
    assert!(!verify(token, url, &changed, &sig));
    let mut added = p.clone();
    added.push(("Body".into(), "STOP".into()));
    assert!(!verify(token, url, &added, &sig));
    assert!(!verify(token, "https://mycompany.com/myapp.php?foo=1&bar=3", &p, &sig));
    assert!(!verify("54321", url, &p, &sig));
    assert!(!verify(token, url, &p, ""));
    assert!(!verify(token, url, &p, "not base64!"));
    assert!(!verify(token, url, &p, "RSOYDt4T1cUTdK1PDd93/VVr8B9="));
}

#[test]
fn a_default_port_added_or_left_out_still_verifies() {
    let (token, _, p) = documented();
    let with_port = signature(token, "https://mycompany.com:443/myapp.php?foo=1&bar=2", &p);
    assert!(verify(token, "https://mycompany.com/myapp.php?foo=1&bar=2", &p, &with_port));
    let without = signature(token, "https://mycompany.com/myapp.php", &p);
    assert!(verify(token, "https://mycompany.com:443/myapp.php", &p, &without));
    // Another port is another URL.
    let other = signature(token, "https://mycompany.com:8443/myapp.php", &p);
    assert!(!verify(token, "https://mycompany.com/myapp.php", &p, &other));
}

#[test]
fn webhooks_parse_and_map_statuses() {
    let p =
        params(&[("MessageSid", "SM1"), ("From", "+15550001111"), ("To", "+15550002222"), ("Body", "Stop.")]);
    let m = inbound(&p).unwrap();
    assert_eq!((m.provider_id.as_str(), m.from.as_str(), m.body.as_str()), ("SM1", "+15550001111", "Stop."));
    assert!(!format!("{m:?}").contains("Stop."), "bodies never reach Debug output");
    assert!(inbound(&params(&[("From", "+15550001111")])).is_none());
    let s =
        status(&params(&[("MessageSid", "SM1"), ("MessageStatus", "undelivered"), ("ErrorCode", "30003")]))
            .unwrap();
    assert_eq!(s.state, DeliveryState::Undelivered);
    assert_eq!(s.error_code.as_deref(), Some("30003"));
    let s = status(&params(&[("MessageSid", "SM1"), ("MessageStatus", "delivered")])).unwrap();
    assert_eq!(s.state, DeliveryState::Delivered);
}

#[test]
fn the_auth_token_never_reaches_debug_output() {
    let c = TwilioConfig {
        account_sid: format!("AC{}", "0".repeat(32)),
        auth_token: "s3cr3t-auth-token-value".into(),
        from: "+15550009999".into(),
        api_base: DEFAULT_API_BASE.into(),
    };
    assert!(c.validate().is_ok());
    assert!(!format!("{c:?}").contains("s3cr3t"));
    assert!(!format!("{:?}", crate::GatewayConfig::Twilio(c.clone())).contains("s3cr3t"));
    let bad = TwilioConfig { from: "5550009999".into(), ..c };
    assert!(bad.validate().unwrap_err().contains("from"));
}
