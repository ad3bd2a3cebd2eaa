//! Several nodes on one PostgreSQL: the NATS transport of the real-time bus. Each node publishes
//! what its use cases publish, in its wire form (ids and positions, never content; see
//! `haven_app::realtime::BusMessage::to_wire`), on one subject, and gives what the others
//! publish to its own hub. A node does not receive its own messages (`no_echo`): its sockets
//! had them already, with their content.
//!
//! Delivery over NATS is at most once. Whenever this node may have missed something (its
//! connection to NATS was lost, or NATS dropped messages because the node fell behind), it
//! closes its sockets as if they were too slow, and each client resumes from its positions; and
//! when something it relayed may not have arrived (its queue to NATS was full, a publish failed,
//! or it reconnected with messages in flight), it sends a resync within a second, before
//! anything else, on which the other nodes do the same. While NATS is away, a node's sockets are
//! closed too: they would hear nothing from the others, nor a sign-out made on another node.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use futures_util::StreamExt;
use haven_app::App;
use haven_app::realtime::{BusMessage, Hub, Loss, Outgoing};

use crate::config::ClusterConf;

/// Messages queued for the other nodes before the node drops them (and counts them).
const RELAY_QUEUE: usize = 65_536;

/// How soon a resync follows a loss when nothing else is being relayed.
const RESYNC_CHECK: Duration = Duration::from_secs(1);

/// Joins the cluster named by `conf` when it names one: returns the application with its
/// bus relaying to the other nodes, and the tasks that carry it. Refused on SQLite, whose
/// database one process owns.
pub async fn join(app: App, conf: &ClusterConf, node_name: &str) -> anyhow::Result<App> {
    let Some(url) = conf.nats_url.as_deref() else { return Ok(app) };
    if app.store().backend() != haven_store::Backend::Postgres {
        anyhow::bail!(
            "cluster.nats_url is set, but the database is SQLite: several nodes need one PostgreSQL database"
        );
    }
    let subject = conf.subject.clone();
    anyhow::ensure!(
        !subject.is_empty() && !subject.contains([' ', '*', '>']),
        "cluster.subject: {subject:?} is not a NATS subject to publish on"
    );
    let (address, options) = options(url, node_name)?;
    let hub = app.hub().clone();
    let (app, mut outgoing) = app.with_relay(RELAY_QUEUE);
    let events = Arc::new(Events {
        hub: hub.clone(),
        loss: outgoing.loss.clone(),
        connected_once: AtomicBool::new(false),
        warned_behind: AtomicU64::new(0),
    });
    let client = options
        .event_callback(move |event| {
            let events = events.clone();
            async move { events.on(event) }
        })
        .connect(address.as_str())
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect to the cluster's NATS server at {address}: {e}"))?;
    let subscriber = client
        .subscribe(subject.clone())
        .await
        .with_context(|| format!("cannot subscribe to {subject} on the cluster's NATS server"))?;
    tokio::spawn(async move {
        let mut subscriber = subscriber;
        while let Some(msg) = subscriber.next().await {
            match BusMessage::from_wire(&msg.payload) {
                Ok(m) => hub.apply(m),
                Err(e) => {
                    // Whoever else publishes on the subject could flood the log: counted only.
                    metrics::counter!("haven_bus_rejected_total").increment(1);
                    tracing::debug!(error = %e, "ignored a message on the cluster bus");
                }
            }
        }
        tracing::error!("the cluster bus subscription ended: deliveries from other nodes stop");
    });
    tokio::spawn(async move {
        loop {
            let next = tokio::time::timeout(RESYNC_CHECK, outgoing.rx.recv()).await;
            // After a loss the others resync first, so no later message is taken as complete.
            if outgoing.loss.take() && client.publish(subject.clone(), Outgoing::RESYNC.into()).await.is_err()
            {
                outgoing.loss.record();
            }
            match next {
                Ok(Some(bytes)) => {
                    if let Err(e) = client.publish(subject.clone(), bytes.into()).await {
                        tracing::debug!(error = %e, "could not relay a message to the other nodes");
                        outgoing.loss.record();
                    }
                }
                Ok(None) => break,
                Err(_) => {}
            }
        }
    });
    tracing::info!(subject = %conf.subject, server = %address, "joined the cluster");
    Ok(app)
}

/// The server's address without credentials (for messages and the client's own logs, which
/// print the address it connects to), and the connection's options with the credentials.
fn options(url: &str, node_name: &str) -> anyhow::Result<(String, async_nats::ConnectOptions)> {
    let bad = || anyhow::anyhow!("cluster.nats_url is not a URL such as nats://host:4222");
    let mut parsed = reqwest::Url::parse(url).map_err(|_| bad())?;
    anyhow::ensure!(matches!(parsed.scheme(), "nats" | "tls") && parsed.host().is_some(), bad());
    let user = parsed.username().to_owned();
    let password = parsed.password().map(str::to_owned);
    parsed.set_username("").map_err(|()| bad())?;
    parsed.set_password(None).map_err(|()| bad())?;
    let options = match (user.is_empty(), password) {
        (true, _) => async_nats::ConnectOptions::new(),
        (false, Some(p)) => async_nats::ConnectOptions::with_user_and_password(decode(&user), decode(&p)),
        (false, None) => async_nats::ConnectOptions::with_token(decode(&user)),
    };
    let options = options
        .name(format!("haven {node_name}"))
        .no_echo()
        .connection_timeout(Duration::from_secs(5))
        .require_tls(parsed.scheme() == "tls");
    Ok((parsed.to_string().trim_end_matches('/').to_owned(), options))
}

/// A URL's percent-encoded user or password, decoded.
fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// What the node does on the NATS connection's events.
struct Events {
    hub: Arc<Hub>,
    loss: Loss,
    connected_once: AtomicBool,
    /// When the last "fell behind" warning was logged (seconds since the Unix epoch).
    warned_behind: AtomicU64,
}

impl Events {
    /// While NATS is away this node hears nothing from the others, and a sign-out elsewhere
    /// does not reach its sockets: they close, and their clients come back signed in afresh
    /// and resume. On every reconnection (events may be dropped, so not only after a
    /// disconnection is seen) they close again, once the subscription is back, and what was
    /// in flight on the old connection is made up by a resync to the others.
    fn on(&self, event: async_nats::Event) {
        use async_nats::Event;
        match event {
            Event::Disconnected => {
                tracing::warn!(
                    sockets = self.hub.connections(),
                    "lost the cluster's NATS server: sockets resume"
                );
                self.hub.drop_all();
            }
            Event::Connected => {
                if self.connected_once.swap(true, Ordering::SeqCst) {
                    tracing::warn!("reconnected to the cluster's NATS server: sockets resume to catch up");
                    self.loss.record();
                    let hub = self.hub.clone();
                    // The subscription is restored after this event: close once it is.
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        hub.drop_all();
                    });
                }
            }
            Event::SlowConsumer(_) => {
                // One event per message dropped: close the sockets each time, warn once a minute.
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                if now.saturating_sub(self.warned_behind.swap(now, Ordering::SeqCst)) >= 60 {
                    tracing::warn!(
                        sockets = self.hub.connections(),
                        "this node fell behind the cluster bus and dropped messages: sockets resume to catch up"
                    );
                }
                self.hub.drop_all();
            }
            Event::ServerError(e) => {
                tracing::error!(error = %e, "the cluster's NATS server refused something (permissions?)");
            }
            other => tracing::info!(event = %other, "cluster bus"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_leave_the_address_and_bad_urls_are_refused() {
        let (address, _) = options("nats://haven:s%40cret@10.0.0.5:4222", "a").unwrap();
        assert_eq!(address, "nats://10.0.0.5:4222");
        let (address, _) = options("tls://t0ken@nats.internal", "a").unwrap();
        assert_eq!(address, "tls://nats.internal");
        assert_eq!(decode("s%40cret"), "s@cret");
        for bad in ["10.0.0.5:4222", "http://nats.internal", "nats://", "not a url"] {
            let e = options(bad, "a").err().unwrap_or_else(|| panic!("{bad} accepted")).to_string();
            assert!(e.contains("cluster.nats_url"), "{bad}: {e}");
        }
    }
}
