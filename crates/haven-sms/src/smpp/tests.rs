use rusmpp::tlvs::MessageDeliveryRequestTlvValue;
use rusmpp::values::MessageState;

use super::*;
use crate::DeliveryState;

fn config() -> SmppConfig {
    serde_json::from_value(serde_json::json!({
        "host": "smsc.example.net",
        "system_id": "haven",
        "password": "s3cret!",
        "source_addr": "+15550001111",
    }))
    .unwrap()
}

fn sms(to: &str, body: &str) -> OutboundSms {
    OutboundSms { id: "sms-1".into(), to: to.into(), body: body.into(), status_callback: None }
}

#[test]
fn omitted_settings_take_their_defaults_and_the_config_is_valid() {
    let c = config();
    assert_eq!((c.port, c.system_type.as_str(), c.enquire_link_secs), (2775, "", 30));
    assert_eq!((c.source_addr_ton, c.source_addr_npi, c.dest_addr_ton, c.dest_addr_npi), (1, 1, 1, 1));
    assert_eq!(c.validate(), Ok(()));
    let round_trip: SmppConfig = serde_json::from_value(serde_json::to_value(&c).unwrap()).unwrap();
    assert_eq!(round_trip, c);
}

#[test]
fn debug_output_never_shows_the_password() {
    let shown = format!("{:?}", config());
    assert!(shown.contains("[redacted]") && shown.contains("haven"), "{shown}");
    assert!(!shown.contains("s3cret!"), "{shown}");
    let shown = format!("{:?}", crate::GatewayConfig::Smpp(config()));
    assert!(!shown.contains("s3cret!"), "{shown}");
}

#[test]
fn validation_names_the_bad_field() {
    type Breakage = fn(&mut SmppConfig);
    let cases: [(&str, Breakage); 9] = [
        ("host", |c| c.host = "smsc example".into()),
        ("port", |c| c.port = 0),
        ("system_id", |c| c.system_id = "a-very-long-system-id".into()),
        ("password", |c| c.password = "123456789".into()),
        ("system_type", |c| c.system_type = "x".repeat(13)),
        ("source_addr", |c| c.source_addr = "15550001111".into()),
        ("alphanumeric", |c| (c.source_addr_ton, c.source_addr) = (5, "Haven Clinic 1".into())),
        ("digits", |c| (c.source_addr_ton, c.source_addr) = (3, "CLINIC".into())),
        ("enquire_link_secs", |c| c.enquire_link_secs = 0),
    ];
    for (field, break_it) in cases {
        let mut c = config();
        break_it(&mut c);
        let err = c.validate().unwrap_err();
        assert!(err.contains(field), "{field}: {err}");
        assert!(!err.contains("s3cret!"));
    }
    let mut alphanumeric = config();
    (alphanumeric.source_addr_ton, alphanumeric.source_addr_npi, alphanumeric.source_addr) =
        (5, 0, "Haven".into());
    assert_eq!(alphanumeric.validate(), Ok(()));
    let mut short_code = config();
    (short_code.source_addr_ton, short_code.source_addr) = (3, "12345".into());
    assert_eq!(short_code.validate(), Ok(()));
}

#[test]
fn a_short_ascii_text_goes_in_short_message_to_the_number_without_its_plus() {
    let pdu = submit_sm(&config(), &sms("+15557654321", "Your code is 123456")).unwrap();
    assert_eq!(pdu.destination_addr.as_str(), "15557654321");
    assert_eq!(pdu.source_addr.as_str(), "15550001111");
    assert_eq!((pdu.dest_addr_ton, pdu.dest_addr_npi), (Ton::International, Npi::Isdn));
    assert_eq!(u8::from(pdu.registered_delivery), 0x01, "a final delivery receipt is requested");
    assert_eq!(u8::from(pdu.data_coding), 0x00);
    assert_eq!(pdu.short_message().as_ref(), b"Your code is 123456");
    assert!(pdu.tlvs().is_empty());
}

#[test]
fn a_long_or_accented_text_goes_as_ucs2_in_message_payload_when_it_needs_more_than_one_sms() {
    let spanish = "¿Confirma su cita de mañana? Responda SÍ o NO.";
    let pdu = submit_sm(&config(), &sms("+15557654321", spanish)).unwrap();
    assert_eq!(u8::from(pdu.data_coding), 0x08);
    assert_eq!(pdu.short_message().as_ref(), text::encode(spanish).octets);

    let long = "Recordatorio de su cita en la clínica. ".repeat(5);
    let pdu = submit_sm(&config(), &sms("+15557654321", &long)).unwrap();
    assert_eq!(u8::from(pdu.data_coding), 0x08);
    assert!(pdu.short_message().is_empty());
    let payload = pdu.tlvs().iter().find_map(|t| match t.value() {
        Some(TlvValue::MessagePayload(p)) => Some(p.value.as_ref().to_vec()),
        _ => None,
    });
    assert_eq!(payload, Some(text::encode(&long).octets));

    let pdu = submit_sm(&config(), &sms("+15557654321", &"a".repeat(400))).unwrap();
    assert_eq!(u8::from(pdu.data_coding), 0x00);
    assert!(pdu.short_message().is_empty() && pdu.tlvs().len() == 1);
}

#[test]
fn a_destination_that_is_not_e164_is_refused_like_the_smsc_would() {
    for to in ["15557654321", "+1555", "+1555765432a", ""] {
        match submit_sm(&config(), &sms(to, "hi")) {
            Err(GatewayError::Refused { code }) => assert_eq!(code, "0x0000000b"),
            other => panic!("{to}: {other:?}"),
        }
    }
}

#[test]
fn command_statuses_map_to_retry_refuse_or_fix_the_settings() {
    let kind = |e: GatewayError| match e {
        GatewayError::Unavailable(_) => "unavailable".to_owned(),
        GatewayError::Config(_) => "config".to_owned(),
        GatewayError::Uncertain(_) => "uncertain".to_owned(),
        GatewayError::Refused { code } => code,
    };
    assert_eq!(kind(submit_error(0x58)), "unavailable");
    assert_eq!(kind(submit_error(0x14)), "unavailable");
    assert_eq!(kind(submit_error(0x08)), "unavailable");
    assert_eq!(kind(submit_error(0x64)), "unavailable");
    assert_eq!(kind(submit_error(0x0A)), "config");
    assert_eq!(kind(submit_error(0x0B)), "0x0000000b");
    assert_eq!(kind(submit_error(0x401)), "0x00000401");
    assert_eq!(kind(bind_error(0x0D)), "config");
    assert_eq!(kind(bind_error(0x0E)), "config");
    assert_eq!(kind(bind_error(0x0F)), "config");
    assert_eq!(kind(bind_error(0x08)), "unavailable");
    assert_eq!(kind(bind_error(0x05)), "unavailable");
}

fn deliver(esm_class: u8, data_coding: u8, body: &[u8]) -> rusmpp::pdus::builders::DeliverSmBuilder {
    DeliverSm::builder()
        .source_addr_ton(Ton::International)
        .source_addr(COctetString::from_str("15557654321").unwrap())
        .dest_addr_ton(Ton::International)
        .destination_addr(COctetString::from_str("15550001111").unwrap())
        .esm_class(EsmClass::from(esm_class))
        .data_coding(DataCoding::from(data_coding))
        .short_message(OctetString::from_slice(body).unwrap())
}

#[test]
fn a_receipt_is_read_from_its_text() {
    let text =
        b"id:abc123 sub:001 dlvrd:000 submit date:2501011200 done date:2501011201 stat:UNDELIV err:005 text:";
    let GatewayEvent::Status(report) = inbound_event(&deliver(0x04, 0, text).build()) else { panic!() };
    assert_eq!(
        report,
        StatusReport {
            provider: PROVIDER,
            provider_id: "abc123".into(),
            state: DeliveryState::Undelivered,
            error_code: Some("005".into())
        }
    );
}

#[test]
fn a_receipts_tlvs_win_over_its_text() {
    let pdu = deliver(0x04, 0, b"id:999 stat:ENROUTE")
        .push_tlv(MessageDeliveryRequestTlvValue::ReceiptedMessageId(
            COctetString::from_str("abc123").unwrap(),
        ))
        .push_tlv(MessageDeliveryRequestTlvValue::MessageState(MessageState::Delivered))
        .build();
    let GatewayEvent::Status(report) = inbound_event(&pdu) else { panic!() };
    assert_eq!((report.provider_id.as_str(), report.state), ("abc123", DeliveryState::Delivered));
}

#[test]
fn a_text_from_a_patient_has_e164_numbers_its_body_and_a_stable_id() {
    let body = text::encode("Sí, confirmo. ¿A qué hora?");
    let pdu = deliver(0x00, body.data_coding, &body.octets).build();
    let GatewayEvent::Inbound(first) = inbound_event(&pdu) else { panic!() };
    assert_eq!((first.from.as_str(), first.to.as_str()), ("+15557654321", "+15550001111"));
    assert_eq!(first.body, "Sí, confirmo. ¿A qué hora?");
    let GatewayEvent::Inbound(again) = inbound_event(&pdu) else { panic!() };
    assert_eq!(again.provider_id, first.provider_id);
    let other = deliver(0x00, 0, b"NO").build();
    let GatewayEvent::Inbound(other) = inbound_event(&other) else { panic!() };
    assert_ne!(other.provider_id, first.provider_id);
}

#[test]
fn an_unreadable_receipt_is_kept_as_a_text_rather_than_lost() {
    let GatewayEvent::Inbound(sms) = inbound_event(&deliver(0x04, 0, b"delivered!").build()) else {
        panic!()
    };
    assert_eq!(sms.body, "delivered!");
}

#[test]
fn only_international_numbers_get_a_plus() {
    assert_eq!(e164("15557654321", 1), "+15557654321");
    assert_eq!(e164("15557654321", 0), "+15557654321");
    assert_eq!(e164("12345", 0), "12345");
    assert_eq!(e164("5557654321", 2), "5557654321");
    assert_eq!(e164("Clinic", 5), "Clinic");
}
