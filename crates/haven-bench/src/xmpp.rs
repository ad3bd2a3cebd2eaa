//! Scenario `xmpp`: the `chat` load, unchanged, against an XMPP server (ejabberd, say) over the
//! client protocol (RFC 6120/6121) and multi-user chat (XEP-0045), so that Haven and a second
//! established server are measured by one tool, with one load, on one machine.
//!
//! Each user signs up by in-band registration (XEP-0077), signs in (SASL PLAIN on loopback),
//! binds a resource and joins each of its conversations' rooms, on one TCP stream for the whole
//! run: an XMPP client's way of hearing of new messages, as a Haven client keeps a WebSocket. A
//! sender posts a `groupchat` message to the room; the room sends it to every occupant, the
//! sender included, and that echo is the sender's acknowledgement (XMPP has no other answer to a
//! message). Delivery is the arrival of the message on each other member's stream.
//!
//! The server is not started by the tool: `scripts/bench-ejabberd` starts ejabberd for it,
//! with its rooms archiving every message (XEP-0313) to its SQL store, as Haven stores each one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use quick_xml::events::{BytesStart, Event};
use serde_json::{Value, json};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use crate::ChatArgs;
use crate::chat::{Api, ChatResult};

/// The `xmpp` scenario's arguments.
#[derive(Debug, clap::Args)]
pub struct XmppArgs {
    /// The server's client port (plain TCP: the server is on loopback).
    #[arg(long, default_value = "127.0.0.1:5222")]
    server: String,
    /// The XMPP domain the users are made on; rooms are on `conference.` under it.
    #[arg(long, default_value = "bench.local")]
    domain: String,
    /// The server's process id, to report its peak memory and CPU time.
    #[arg(long)]
    pid: Option<u32>,
    #[command(flatten)]
    load: ChatArgs,
}

/// A password the tool's users sign up with (the server is the tool's own, on loopback).
const PASSWORD: &str = "haven-bench-Xmpp-1";

/// Message archive management (XEP-0313), version 2: its namespace, and the feature a room that
/// archives offers.
const MAM: &str = "urn:xmpp:mam:2";

/// How long signing in, or joining a room, may take before the tool gives up on the server.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Rooms named in this process: a room's name carries the run's start time and this count, so
/// that runs against one server, and conversations of the same members, do not share a room.
static ROOMS: AtomicUsize = AtomicUsize::new(0);

/// The stream's reading half, parsed as XML as it arrives.
type Reader = quick_xml::Reader<BufReader<OwnedReadHalf>>;

/// One top-level element of the stream (a stanza, or a SASL or stream element), as far as the
/// tool reads it.
#[derive(Debug, Default)]
struct Stanza {
    /// The element's local name (`message`, `iq`, `presence`, `success`, `features`, `stream`).
    name: String,
    /// Its `type` attribute.
    kind: Option<String>,
    /// Its `id` attribute.
    id: Option<String>,
    /// Its `from` attribute.
    from: Option<String>,
    /// The text of its descendants, by their path of local names under it (`body` for a
    /// message's own body; `bind/jid`, `query/version`, `fin/set/count` in answers), so that a
    /// body nested deeper (a forwarded message's, XHTML's) is not taken for the stanza's.
    texts: Vec<(String, String)>,
    /// The codes of its `<status code=…/>` descendants (MUC presence: 110 is the occupant's own).
    codes: Vec<String>,
    /// The `var` of its `<feature/>` descendants (what a disco#info answer says is offered).
    features: Vec<String>,
}

impl Stanza {
    fn text(&self, path: &str) -> Option<&str> {
        self.texts.iter().find(|(p, _)| p == path).map(|(_, t)| t.as_str())
    }
}

fn local_name(e: &BytesStart) -> String {
    e.local_name().as_ref().to_owned()
}

fn attribute(e: &BytesStart, name: &str) -> Option<String> {
    let a = e.try_get_attribute(name).ok()??;
    Some(a.normalized_value(quick_xml::XmlVersion::Implicit1_0).ok()?.into_owned())
}

/// A stanza's element from its opening tag, with none of its content yet.
fn stanza_of(e: &BytesStart) -> Stanza {
    Stanza {
        name: local_name(e),
        kind: attribute(e, "type"),
        id: attribute(e, "id"),
        from: attribute(e, "from"),
        ..Default::default()
    }
}

/// Reads the stream's next top-level element whole (or, for the stream's own opening tag,
/// just that tag: its content is the rest of the session). Not cancel-safe: a stanza half read
/// when the future is dropped is lost, so it is only dropped when the stream is done with.
async fn next_stanza<R>(r: &mut quick_xml::Reader<R>, buf: &mut Vec<u8>) -> anyhow::Result<Stanza>
where
    R: tokio::io::AsyncBufRead + Unpin,
{
    let mut st = Stanza::default();
    // The open elements under the stanza's own.
    let mut path: Vec<String> = Vec::new();
    let mut inside = false;
    loop {
        buf.clear();
        match r.read_event_into_async(buf).await.context("the stream is not well-formed XML")? {
            Event::Start(e) if !inside => {
                st = stanza_of(&e);
                if st.name == "stream" {
                    return Ok(st);
                }
                inside = true;
            }
            Event::Start(e) => path.push(local_name(&e)),
            Event::Empty(e) if !inside => return Ok(stanza_of(&e)),
            Event::Empty(e) => match local_name(&e).as_str() {
                "status" => st.codes.extend(attribute(&e, "code")),
                "feature" => st.features.extend(attribute(&e, "var")),
                _ => {}
            },
            Event::Text(t) if !path.is_empty() => {
                st.texts.push((path.join("/"), t.xml10_content().into_owned()));
            }
            Event::End(_) if !inside => bail!("the server closed the stream"),
            Event::End(_) if path.is_empty() => return Ok(st),
            Event::End(_) => {
                path.pop();
            }
            Event::Eof => bail!("the server closed the connection"),
            _ => {}
        }
    }
}

/// An open stream, before its reading half is handed to a listener.
struct Stream {
    reader: Reader,
    writer: OwnedWriteHalf,
    buf: Vec<u8>,
}

impl Stream {
    /// Connects to `addr` and opens a stream to `domain`, up to its features.
    async fn open(addr: &str, domain: &str) -> anyhow::Result<Self> {
        let tcp = TcpStream::connect(addr).await.with_context(|| format!("connecting to {addr}"))?;
        // Stanzas are small and each one is waited for: Nagle's delay would be the latency.
        tcp.set_nodelay(true)?;
        let (read, writer) = tcp.into_split();
        let mut reader = quick_xml::Reader::from_reader(BufReader::new(read));
        reader.config_mut().trim_text(true);
        let mut s = Self { reader, writer, buf: Vec::with_capacity(4096) };
        s.restart(domain).await?;
        Ok(s)
    }

    /// Opens (or, after SASL, opens again) the stream, and reads up to its features.
    async fn restart(&mut self, domain: &str) -> anyhow::Result<()> {
        self.send(&format!(
            "<?xml version='1.0'?><stream:stream to='{domain}' xmlns='jabber:client' \
             xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>"
        ))
        .await?;
        self.until(|st| st.name == "features").await.map(drop)
    }

    async fn send(&mut self, xml: &str) -> anyhow::Result<()> {
        Ok(self.writer.write_all(xml.as_bytes()).await?)
    }

    /// Reads stanzas until one `wanted`; fails on a stream error.
    async fn until(&mut self, wanted: impl Fn(&Stanza) -> bool) -> anyhow::Result<Stanza> {
        loop {
            let st = next_stanza(&mut self.reader, &mut self.buf).await?;
            if st.name == "error" {
                bail!("stream error: {st:?}");
            }
            if wanted(&st) {
                return Ok(st);
            }
        }
    }

    /// Sends an `iq` with id `id` and waits for its answer; fails unless it is a result.
    async fn iq(&mut self, id: &str, xml: &str) -> anyhow::Result<Stanza> {
        self.send(xml).await?;
        let st = self.until(|st| st.name == "iq" && st.id.as_deref() == Some(id)).await?;
        if st.kind.as_deref() != Some("result") {
            bail!("the server refused iq {id}: {st:?}");
        }
        Ok(st)
    }

    /// Opens a stream to `jid`'s server, signs in as `jid` and binds a resource.
    async fn signed_in(addr: &str, jid: &str, password: &str) -> anyhow::Result<Self> {
        let (local, domain) = split_jid(jid)?;
        let mut s = Self::open(addr, domain).await?;
        s.sign_in(local, domain, password).await?;
        Ok(s)
    }

    /// Signs in as `local`@`domain` and binds a resource.
    async fn sign_in(&mut self, local: &str, domain: &str, password: &str) -> anyhow::Result<()> {
        let plain = data_encoding::BASE64.encode(format!("\0{local}\0{password}").as_bytes());
        self.send(&format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{plain}</auth>"
        ))
        .await?;
        let answer = self.until(|st| st.name == "success" || st.name == "failure").await?;
        if answer.name != "success" {
            bail!("signing in as {local} failed: {answer:?}");
        }
        self.restart(domain).await?;
        self.iq(
            "bind",
            "<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
             <resource>bench</resource></bind></iq>",
        )
        .await
        .map(drop)
    }
}

/// The local part and domain of a bare JID.
fn split_jid(jid: &str) -> anyhow::Result<(&str, &str)> {
    jid.split_once('@').with_context(|| format!("{jid} is not a bare JID"))
}

/// Signs `n` new users up on `domain`; returns (bare JID, password) per user.
pub async fn register(
    addr: &str,
    domain: &str,
    n: usize,
    progress: &indicatif::ProgressBar,
) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::with_capacity(n);
    for local in crate::established::new_user_names(n) {
        let mut s = Stream::open(addr, domain).await?;
        s.iq(
            "reg",
            &format!(
                "<iq type='set' id='reg'><query xmlns='jabber:iq:register'>\
                 <username>{local}</username><password>{PASSWORD}</password></query></iq>"
            ),
        )
        .await
        .context("signing up (the server must allow in-band registration)")?;
        s.send("</stream:stream>").await?;
        out.push((format!("{local}@{domain}"), PASSWORD.to_owned()));
        progress.inc(1);
    }
    Ok(out)
}

/// The address of a new room on the server of `creator` (a bare JID). Nothing is sent: an XMPP
/// room is made by its first occupant's joining it.
pub fn room_name(creator: &str) -> anyhow::Result<String> {
    let (_, domain) = split_jid(creator)?;
    let n = ROOMS.fetch_add(1, Ordering::Relaxed);
    let tag = jiff::Timestamp::now().as_millisecond();
    Ok(format!("bench{tag}r{n}@conference.{domain}"))
}

/// The messages sent on a stream that wait for their echo, by body; `None` once the stream's
/// reader has stopped (nothing more will be echoed).
type Waiting = Arc<Mutex<Option<Pending>>>;

/// Each message waiting for its echo: its body, and how to tell its sender.
type Pending = HashMap<String, tokio::sync::oneshot::Sender<()>>;

/// A user's stream, shared by the senders who post as that user: its writing half, and the
/// messages sent on it that wait for their echo.
#[derive(Clone)]
pub struct Conn {
    out: Arc<tokio::sync::Mutex<OwnedWriteHalf>>,
    waiting: Waiting,
}

impl Conn {
    /// Posts `key` (as the message's id and body) to `room`, and returns once the room has
    /// echoed it back; fails if the room refuses it or the stream ends first. There is no time
    /// limit, as there is none on the HTTP scenarios' sends: a slow server shows as latency.
    pub async fn send(&self, room: &str, key: &str) -> anyhow::Result<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.waiting()?.as_mut().context("the stream has ended")?.insert(key.to_owned(), tx);
        let xml = format!("<message to='{room}' type='groupchat' id='{key}'><body>{key}</body></message>");
        if let Err(e) = self.out.lock().await.write_all(xml.as_bytes()).await {
            self.waiting()?.as_mut().map(|w| w.remove(key));
            return Err(e.into());
        }
        rx.await.map_err(|_| anyhow::anyhow!("the room refused {key}, or the stream ended"))
    }

    fn waiting(&self) -> anyhow::Result<std::sync::MutexGuard<'_, Option<Pending>>> {
        self.waiting.lock().map_err(|_| anyhow::anyhow!("poisoned"))
    }
}

/// Signs `jid` in, joins `rooms` (asking for no history), and records the body and arrival time
/// of every room message until `stop` changes; returns what it recorded, and the user's stream
/// for its senders. Returns once every room has taken the user in, so nothing sent afterwards
/// is missed.
pub async fn open_stream(
    addr: &str,
    jid: &str,
    password: &str,
    rooms: &[&str],
    seen: Arc<AtomicUsize>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<(crate::chat::Arrivals, Conn)> {
    let (local, _) = split_jid(jid)?;
    let join = async {
        let mut s = Stream::signed_in(addr, jid, password).await?;
        for room in rooms {
            let me = format!("{room}/{local}");
            s.send(&format!(
                "<presence to='{me}'><x xmlns='http://jabber.org/protocol/muc'>\
                 <history maxstanzas='0'/></x></presence>"
            ))
            .await?;
            let answer = s
                .until(|st| st.name == "presence" && st.from.as_deref() == Some(&me))
                .await
                .with_context(|| format!("joining {room}"))?;
            if answer.kind.as_deref() == Some("error") || !answer.codes.iter().any(|c| c == "110") {
                bail!("{room} did not take {local} in: {answer:?}");
            }
        }
        anyhow::Ok(s)
    };
    let s = tokio::time::timeout(SETUP_TIMEOUT, join)
        .await
        .with_context(|| format!("{local} was not signed in and in its rooms within {SETUP_TIMEOUT:?}"))??;
    let Stream { mut reader, writer, mut buf } = s;
    let conn = Conn {
        out: Arc::new(tokio::sync::Mutex::new(writer)),
        waiting: Arc::new(Mutex::new(Some(HashMap::new()))),
    };
    let waiting = conn.waiting.clone();
    let jid = jid.to_owned();
    let arrivals = tokio::spawn(async move {
        let mut arrived = Vec::new();
        loop {
            let st = tokio::select! {
                st = next_stanza(&mut reader, &mut buf) => st,
                _ = stop.changed() => break,
            };
            let st = match st {
                Ok(st) => st,
                Err(e) => {
                    eprintln!("{jid}'s stream ended: {e:#}");
                    break;
                }
            };
            if st.name != "message" {
                continue;
            }
            let Ok(mut waiting) = waiting.lock() else { break };
            let Some(waiting) = waiting.as_mut() else { break };
            if st.kind.as_deref() == Some("error") {
                // Dropping the sender's half tells it the room refused its message.
                st.id.and_then(|id| waiting.remove(&id));
                continue;
            }
            let Some(body) = st.text("body") else { continue };
            if let Some(echo) = waiting.remove(body) {
                let _ = echo.send(());
            }
            arrived.push((body.to_owned(), Instant::now()));
            seen.fetch_add(1, Ordering::Relaxed);
        }
        // Whoever still waits for an echo is told at once that none will come.
        if let Ok(mut waiting) = waiting.lock() {
            waiting.take();
        }
        arrived
    });
    Ok((arrivals, conn))
}

/// The server's name and version (XEP-0092), asked as `user`.
async fn version(addr: &str, user: &(String, String)) -> anyhow::Result<String> {
    let (_, domain) = split_jid(&user.0)?;
    let mut s = Stream::signed_in(addr, &user.0, &user.1).await?;
    let answer = s
        .iq(
            "version",
            &format!("<iq type='get' id='version' to='{domain}'><query xmlns='jabber:iq:version'/></iq>"),
        )
        .await?;
    s.send("</stream:stream>").await?;
    let (name, version) = (answer.text("query/name"), answer.text("query/version"));
    Ok(format!("{} {}", name.unwrap_or("?"), version.unwrap_or("?")))
}

/// How many messages the archives (XEP-0313) of `rooms` hold, asked as `user`; `None` if the
/// rooms do not say they archive (the server only routes).
async fn archived(addr: &str, user: &(String, String), rooms: &[String]) -> anyhow::Result<Option<usize>> {
    let mut s = Stream::signed_in(addr, &user.0, &user.1).await?;
    let mut total = 0;
    for (i, room) in rooms.iter().enumerate() {
        let id = format!("info{i}");
        let info = s
            .iq(&id, &format!("<iq type='get' id='{id}' to='{room}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"))
            .await?;
        if !info.features.iter().any(|f| f == MAM) {
            return Ok(None);
        }
        let id = format!("count{i}");
        s.send(&format!(
            "<iq type='set' id='{id}' to='{room}'><query xmlns='{MAM}'>\
             <set xmlns='http://jabber.org/protocol/rsm'><max>0</max></set></query></iq>"
        ))
        .await?;
        let answer = s.until(|st| st.name == "iq" && st.id.as_deref() == Some(&id)).await?;
        anyhow::ensure!(
            answer.kind.as_deref() == Some("result"),
            "{room} refused to count its archive: {answer:?}"
        );
        let count = answer.text("fin/set/count").with_context(|| format!("no count in {answer:?}"))?;
        total += count.parse::<usize>().with_context(|| format!("a count of {count:?}"))?;
    }
    s.send("</stream:stream>").await?;
    Ok(Some(total))
}

/// Runs the chat load against the server and reports it as the `chat` scenario does.
pub fn run(ctx: &crate::Ctx, a: &XmppArgs) -> anyhow::Result<()> {
    a.load.check()?;
    let bar = crate::bar(a.load.users as u64, "users");
    let users = ctx.rt.block_on(register(&a.server, &a.domain, a.load.users, &bar));
    bar.finish_and_clear();
    let users = users?;
    let server = ctx.rt.block_on(version(&a.server, &users[0])).unwrap_or_else(|_| "unknown".into());
    // An echo only says the room took the message: that it was stored is checked in the
    // rooms' archives once the load is over.
    let check_archives = |r: &ChatResult, results: &mut Value| {
        let accepted = r.accepted;
        let archived = ctx
            .rt
            .block_on(archived(&a.server, &users[0], &r.conversations))
            .context("counting the archives")?;
        results["archived"] = json!(archived);
        match archived {
            Some(n) => {
                println!("  the rooms' archives hold {n} messages ({accepted} accepted)");
                anyhow::ensure!(n >= accepted, "{} accepted messages are not in the archives", accepted - n);
            }
            None => println!("  the rooms archive nothing (the server only routes)"),
        }
        Ok(())
    };
    let label = format!("xmpp ({server})");
    crate::established::run(ctx, Api::Xmpp, &a.server, &users, a.pid, &a.load, &label, check_archives)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `xml` (a stream's opening tag, then stanzas) as the tool reads a stream, the
    /// bytes arriving one at a time (so that every element is split across reads).
    async fn stanzas(xml: &'static str) -> Vec<Stanza> {
        let (mut server, client) = tokio::io::duplex(1);
        tokio::spawn(async move { server.write_all(xml.as_bytes()).await.unwrap() });
        let mut reader = quick_xml::Reader::from_reader(BufReader::with_capacity(1, client));
        reader.config_mut().trim_text(true);
        let mut buf = Vec::new();
        let mut out = Vec::new();
        while let Ok(st) = next_stanza(&mut reader, &mut buf).await {
            out.push(st);
        }
        out
    }

    #[tokio::test]
    async fn a_stream_is_read_stanza_by_stanza() {
        let got = stanzas(
            "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
             xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>\
             <presence from='r@c.x/alice'><x xmlns='http://jabber.org/protocol/muc#user'>\
             <item role='moderator'/><status code='201'/><status code='110'/></x></presence>\
             <message from='r@c.x/bob' type='groupchat' id='k1'><stanza-id id='9'/>\
             <body>k1</body></message><success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>",
        )
        .await;
        let names: Vec<&str> = got.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["stream", "presence", "message", "success"]);
        assert_eq!(got[1].codes, ["201", "110"]);
        assert_eq!(got[1].from.as_deref(), Some("r@c.x/alice"));
        assert_eq!((got[2].kind.as_deref(), got[2].id.as_deref()), (Some("groupchat"), Some("k1")));
        assert_eq!(got[2].text("body"), Some("k1"));
    }

    #[tokio::test]
    async fn a_disco_answer_lists_its_features() {
        let got = stanzas(
            "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>\
             <iq type='result' id='info0'><query xmlns='http://jabber.org/protocol/disco#info'>\
             <identity category='conference' type='text'/><feature var='http://jabber.org/protocol/muc'/>\
             <feature var='urn:xmpp:mam:2'/></query></iq>",
        )
        .await;
        assert_eq!(got[1].features, ["http://jabber.org/protocol/muc", MAM]);
    }

    #[tokio::test]
    async fn only_a_stanzas_own_body_is_its_body() {
        let got = stanzas(
            "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>\
             <message type='groupchat'><html xmlns='http://jabber.org/protocol/xhtml-im'>\
             <body>rich</body></html><body>plain</body></message>\
             <iq type='result' id='v'><query xmlns='jabber:iq:version'><name>ejabberd</name>\
             <version>23.01</version></query></iq></stream:stream>",
        )
        .await;
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(got[1].text("body"), Some("plain"));
        assert_eq!(got[1].text("html/body"), Some("rich"));
        assert_eq!(
            (got[2].text("query/name"), got[2].text("query/version")),
            (Some("ejabberd"), Some("23.01"))
        );
    }

    #[test]
    fn rooms_are_named_apart_on_the_users_server() {
        let a = room_name("u1@bench.local").unwrap();
        let b = room_name("u1@bench.local").unwrap();
        assert_ne!(a, b);
        assert!(a.ends_with("@conference.bench.local"), "{a}");
        assert!(room_name("no-domain").is_err());
    }
}
