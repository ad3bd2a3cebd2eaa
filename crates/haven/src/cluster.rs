//! Several nodes on one PostgreSQL: the NATS transport of the real-time bus. Each node publishes
//! what its use cases publish, in its wire form (ids and positions, never content; see
//! `haven_app::realtime::BusMessage::to_wire`), on one subject, and gives what the others
//! publish to its own hub. A node does not receive its own messages (`no_echo`): its sockets
//! had them already, with their content.
//!
//! Delivery over NATS is at most once. Whenever this node may have missed something (its
//! connection to NATS was lost, or NATS dropped messages because the node fell behind), it
//! closes its sockets as if they were too slow, and each client resumes from its positions; and
//! when it could not relay something (its queue to NATS was full, or a publish failed), the next
//! thing it relays is a resync, on which the other nodes do the same. So nothing committed is
//! missed for long.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use futures_util::StreamExt;
use haven_app::App;
use haven_app::realtime::{BusMessage, Hub};

use crate::config::ClusterConf;

/// Messages queued for the other nodes before the node drops them (and counts them).
const RELAY_QUEUE: usize = 65_536;

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
    let hub = app.hub().clone();
    let missed = Arc::new(AtomicBool::new(false));
    let client = {
        let (hub, missed) = (hub.clone(), missed.clone());
        async_nats::ConnectOptions::new()
            .name(format!("haven {node_name}"))
            .no_echo()
            .connection_timeout(Duration::from_secs(5))
            .event_callback(move |event| {
                let (hub, missed) = (hub.clone(), missed.clone());
                async move { on_event(&hub, &missed, event) }
            })
            .connect(url)
            .await
            // The URL may hold a password: never in a message.
            .map_err(|e| anyhow::anyhow!("cannot connect to the cluster's NATS server: {}", e.kind()))?
    };
    let subscriber = client
        .subscribe(subject.clone())
        .await
        .with_context(|| format!("cannot subscribe to {subject} on the cluster's NATS server"))?;
    let (app, mut outgoing) = app.with_relay(RELAY_QUEUE);
    tokio::spawn(async move {
        let mut subscriber = subscriber;
        while let Some(msg) = subscriber.next().await {
            match BusMessage::from_wire(&msg.payload) {
                Ok(m) => hub.apply(m),
                Err(e) => {
                    metrics::counter!("haven_bus_rejected_total").increment(1);
                    tracing::warn!(error = %e, "ignored a message on the cluster bus");
                }
            }
        }
        tracing::error!("the cluster bus subscription ended: deliveries from other nodes stop");
    });
    tokio::spawn(async move {
        while let Some(bytes) = outgoing.rx.recv().await {
            if let Err(e) = client.publish(subject.clone(), bytes.into()).await {
                tracing::debug!(error = %e, "could not relay a message to the other nodes");
                outgoing.lost_one();
            }
        }
    });
    tracing::info!(subject = %conf.subject, "joined the cluster");
    Ok(app)
}

/// Reacts to the NATS connection's events: after a reconnection or dropped messages, the
/// node's sockets resume.
fn on_event(hub: &Hub, missed: &AtomicBool, event: async_nats::Event) {
    use async_nats::Event;
    match event {
        Event::Disconnected => {
            missed.store(true, Ordering::SeqCst);
            tracing::warn!("lost the cluster's NATS server; reconnecting");
        }
        Event::Connected => {
            if missed.swap(false, Ordering::SeqCst) {
                tracing::warn!(
                    sockets = hub.connections(),
                    "reconnected to the cluster's NATS server: sockets resume to catch up"
                );
                hub.drop_all();
            }
        }
        Event::SlowConsumer(_) => {
            tracing::warn!(
                sockets = hub.connections(),
                "the cluster's NATS server dropped messages for this node: sockets resume to catch up"
            );
            hub.drop_all();
        }
        other => tracing::info!(event = %other, "cluster bus"),
    }
}
