use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};

use super::*;

fn at(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn zone(name: &str) -> TimeZone {
    TimeZone::get(name).unwrap()
}

#[test]
fn keywords_are_whole_texts_case_and_punctuation_insensitive() {
    for t in
        ["STOP", "Stop.", " stop! ", "opt out", "Opt  Out", "stopall", "UNSUBSCRIBE", "cancel", "end", "quit"]
    {
        assert_eq!(classify(t), Inbound::OptOut, "{t:?}");
    }
    for t in ["revoke", "optout", "¡Alto!", "Parar", "alto."] {
        assert_eq!(classify(t), Inbound::OptOut, "{t:?}");
    }
    for t in ["HELP", "help?", " Ayuda "] {
        assert_eq!(classify(t), Inbound::Help, "{t:?}");
    }
    for t in ["START", "unstop", "Yes!"] {
        assert_eq!(classify(t), Inbound::OptIn, "{t:?}");
    }
}

#[test]
fn free_text_that_mentions_stopping_is_flagged_not_obeyed() {
    for t in [
        "please stop texting me",
        "Stop sending these, thanks",
        "how do I unsubscribe?",
        "no más, alto por favor",
    ] {
        assert_eq!(classify(t), Inbound::LooksLikeOptOut, "{t:?}");
    }
    for t in ["Thanks, see you Tuesday", "I stopped the medication yesterday", "Yes I can come at 3", ""] {
        assert_eq!(classify(t), Inbound::Message, "{t:?}");
    }
}

#[test]
fn a_text_queued_at_night_waits_for_eight_local() {
    let w = SendingWindow::default();
    let ny = zone("America/New_York");
    // 22:00 EDT on 14 July is 02:00 UTC on the 15th; it goes out at 08:00 EDT = 12:00 UTC.
    assert_eq!(w.next_open(at("2026-07-15T02:00:00Z"), &ny), at("2026-07-15T12:00:00Z"));
    // 07:59 local waits one minute; 10:00 local goes now; 20:59 goes now; 21:00 waits.
    assert_eq!(w.next_open(at("2026-07-15T11:59:00Z"), &ny), at("2026-07-15T12:00:00Z"));
    assert_eq!(w.next_open(at("2026-07-15T14:00:00Z"), &ny), at("2026-07-15T14:00:00Z"));
    assert_eq!(w.next_open(at("2026-07-16T00:59:00Z"), &ny), at("2026-07-16T00:59:00Z"));
    assert_eq!(w.next_open(at("2026-07-16T01:00:00Z"), &ny), at("2026-07-16T12:00:00Z"));
}

#[test]
fn daylight_saving_changes_move_the_opening_in_utc() {
    let w = SendingWindow::default();
    let ny = zone("America/New_York");
    // Spring forward (8 March 2026): 22:00 EST the night before -> 08:00 EDT = 12:00 UTC.
    assert_eq!(w.next_open(at("2026-03-08T03:00:00Z"), &ny), at("2026-03-08T12:00:00Z"));
    // Fall back (1 November 2026): 22:00 EDT the night before -> 08:00 EST = 13:00 UTC.
    assert_eq!(w.next_open(at("2026-11-01T02:00:00Z"), &ny), at("2026-11-01T13:00:00Z"));
    // A window that starts inside the spring-forward gap opens at the first instant after it.
    let early = SendingWindow::new(jiff::civil::time(2, 30, 0, 0), jiff::civil::time(21, 0, 0, 0)).unwrap();
    assert_eq!(early.next_open(at("2026-03-08T05:00:00Z"), &ny), at("2026-03-08T07:30:00Z"));
}

#[test]
fn an_unknown_zone_gets_the_strictest_window() {
    let w = SendingWindow::default();
    let zones = [zone("America/New_York"), zone("America/Los_Angeles"), zone("Pacific/Honolulu")];
    // 08:00 in New York is 02:00 in Honolulu: wait for 08:00 there (18:00 UTC).
    assert_eq!(next_open_everywhere(&w, at("2026-07-01T12:00:00Z"), &zones), at("2026-07-01T18:00:00Z"));
    // 20:59 in New York is open everywhere; 21:00 is not, and the next opening is 18:00 UTC.
    assert_eq!(next_open_everywhere(&w, at("2026-07-02T00:59:00Z"), &zones), at("2026-07-02T00:59:00Z"));
    assert_eq!(next_open_everywhere(&w, at("2026-07-02T01:00:00Z"), &zones), at("2026-07-02T18:00:00Z"));
}

#[test]
fn windows_must_open_before_they_close() {
    let t = jiff::civil::time;
    assert!(SendingWindow::new(t(21, 0, 0, 0), t(8, 0, 0, 0)).is_err());
    assert!(SendingWindow::new(t(9, 0, 0, 0), t(9, 0, 0, 0)).is_err());
    assert!(SendingWindow::new(t(9, 0, 0, 0), t(20, 0, 0, 0)).is_ok());
}

#[test]
fn frequency_caps_default_to_one_a_day_and_three_a_week() {
    let now = at("2026-07-10T15:00:00Z");
    let h = SignedDuration::from_hours;
    let caps = default_caps();
    assert_eq!(next_within_caps(&[], now, &caps), now);
    // One text 23 hours ago: the next may go in an hour.
    assert_eq!(next_within_caps(&[now - h(23)], now, &caps), now + h(1));
    // Three in the last week, none today: wait until the oldest is a week old.
    let sent = [now - h(48), now - h(96), now - h(144)];
    assert_eq!(next_within_caps(&sent, now, &caps), now - h(144) + h(168));
    // Two in the week, one 25 hours ago: free now.
    assert_eq!(next_within_caps(&[now - h(25), now - h(100)], now, &caps), now);
}

#[test]
fn templates_may_hold_no_placeholder_that_could_carry_phi() {
    assert!(check_template("{{ org_name }}: you have a secure message. Read it at {{link}}").is_ok());
    assert!(check_template("Mensaje seguro de {{org_name}}: {{ link }} Ayuda: {{help_phone}}").is_ok());
    let code = |t: &str| check_template(t).unwrap_err().code;
    assert_eq!(code("Hi {{ patient_name }}, see {{ link }}"), "phi_placeholder");
    assert_eq!(code("Your appointment on {{date}}: {{link}}"), "phi_placeholder");
    assert_eq!(code("You have a secure message."), "missing_link");
    assert_eq!(code("Read at {{ link"), "invalid_template");
    assert_eq!(code("Read at {{ link }} }}"), "invalid_template");
    assert_eq!(code(&format!("{} {{{{link}}}}", "x".repeat(320))), "template_too_long");
}

#[test]
fn a_regional_window_only_narrows() {
    let base = SendingWindow::default();
    let florida = SendingWindow::new(Time::constant(8, 0, 0, 0), Time::constant(20, 0, 0, 0)).unwrap();
    assert_eq!(base.narrowed(&florida), Some(florida));
    let wide = SendingWindow::new(Time::constant(7, 0, 0, 0), Time::constant(22, 0, 0, 0)).unwrap();
    assert_eq!(base.narrowed(&wide), Some(base), "a laxer rule changes nothing");
    let night = SendingWindow::new(Time::constant(21, 30, 0, 0), Time::constant(23, 0, 0, 0)).unwrap();
    assert_eq!(base.narrowed(&night), None);
}

#[test]
fn a_schedule_is_a_time_within_thirty_days_and_the_past_means_now() {
    let now = at("2026-12-04T18:00:00Z");
    assert_eq!(scheduled(None, now).unwrap(), None);
    assert_eq!(scheduled(Some("2026-12-05T14:00:00Z"), now).unwrap(), Some(at("2026-12-05T14:00:00Z")));
    assert_eq!(scheduled(Some("2026-12-04T17:59:00Z"), now).unwrap(), None);
    assert_eq!(scheduled(Some("2027-01-03T18:00:00Z"), now).unwrap(), Some(at("2027-01-03T18:00:00Z")));
    for bad in ["2027-01-03T18:00:01Z", "tomorrow", "2026-12-05", ""] {
        assert_eq!(scheduled(Some(bad), now).unwrap_err().code, "invalid_send_at", "{bad:?}");
    }
}
