//! The local buffer between RabbitMQ's pushes (`basic.deliver` within the `basic.qos` prefetch window) and
//! `Transport::consume`, which takes from it in the order the runtime asks for queues.
//!
//! Inside a queue, messages are served in arrival order, except on priority queues (`x-max-priority`), where the
//! higher priority is served first (RabbitMQ's order) even among messages already prefetched; equal priorities stay
//! in arrival order. Every entry remembers the connection it came on: entries of a dead connection are dropped
//! when met (RabbitMQ delivers those messages again).

use celery_proto::kombu_amqp::{AmqpProperties, DeliveryInfo};
use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};

/// A delivered message not yet taken by `consume`.
pub(crate) struct Pending {
    /// The connection generation it was delivered on.
    pub live: u64,
    /// RabbitMQ's delivery tag on that connection's consume channel.
    pub dtag: u64,
    pub info: DeliveryInfo,
    pub props: AmqpProperties,
    pub body: Vec<u8>,
}

#[derive(Default)]
pub(crate) struct Buffer {
    seq: u64,
    queues: HashMap<String, BTreeMap<(Reverse<u8>, u64), Pending>>,
}

impl Buffer {
    /// Add a delivery of `queue`; `by_priority` orders it by its priority property first.
    pub fn push(&mut self, queue: &str, p: Pending, by_priority: bool) {
        self.seq += 1;
        let prio = if by_priority {
            p.props.priority.unwrap_or(0)
        } else {
            0
        };
        self.queues
            .entry(queue.to_string())
            .or_default()
            .insert((Reverse(prio), self.seq), p);
    }

    /// Up to `max` deliveries of connection `live`, from `queues` in that order.
    pub fn take(&mut self, queues: &[String], max: usize, live: u64) -> Vec<(String, Pending)> {
        let mut out = Vec::new();
        for q in queues {
            let Some(buf) = self.queues.get_mut(q) else {
                continue;
            };
            while out.len() < max {
                let Some((_, p)) = buf.pop_first() else {
                    break;
                };
                if p.live == live {
                    out.push((q.clone(), p));
                }
            }
        }
        out
    }

    /// Everything buffered for `queue` (its consumer was cancelled).
    pub fn drain(&mut self, queue: &str) -> Vec<Pending> {
        self.queues
            .remove(queue)
            .map(|b| b.into_values().collect())
            .unwrap_or_default()
    }

    /// Drop what came on connections other than `live`.
    pub fn keep_only(&mut self, live: u64) {
        for buf in self.queues.values_mut() {
            buf.retain(|_, p| p.live == live);
        }
    }

    /// How many deliveries wait for `queue`.
    #[cfg(test)]
    pub fn len(&self, queue: &str) -> usize {
        self.queues.get(queue).map_or(0, BTreeMap::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(live: u64, dtag: u64, prio: Option<u8>) -> Pending {
        Pending {
            live,
            dtag,
            info: DeliveryInfo {
                exchange: String::new(),
                routing_key: "q".into(),
                redelivered: false,
                tag: format!("{live}.{dtag}"),
            },
            props: AmqpProperties {
                priority: prio,
                ..AmqpProperties::default()
            },
            body: Vec::new(),
        }
    }

    #[test]
    fn priority_queues_serve_higher_first_then_arrival() {
        let mut b = Buffer::default();
        for (dtag, prio) in [
            (1, Some(0)),
            (2, Some(9)),
            (3, None),
            (4, Some(9)),
            (5, Some(10)),
        ] {
            b.push("q", p(1, dtag, prio), true);
        }
        let order: Vec<u64> = b
            .take(&["q".into()], 10, 1)
            .iter()
            .map(|(_, p)| p.dtag)
            .collect();
        assert_eq!(order, [5, 2, 4, 1, 3]);
    }

    #[test]
    fn plain_queues_keep_arrival_order_and_queue_order_is_the_callers() {
        let mut b = Buffer::default();
        b.push("b", p(1, 1, Some(9)), false);
        b.push("a", p(1, 2, Some(0)), false);
        b.push("a", p(1, 3, Some(9)), false);
        let got: Vec<u64> = b
            .take(&["a".into(), "b".into()], 2, 1)
            .iter()
            .map(|(_, p)| p.dtag)
            .collect();
        assert_eq!(got, [2, 3]);
        assert_eq!(b.len("b"), 1);
    }

    #[test]
    fn stale_connections_are_dropped() {
        let mut b = Buffer::default();
        b.push("q", p(1, 1, None), false);
        b.push("q", p(2, 1, None), false);
        let got = b.take(&["q".into()], 5, 2);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1.live, 2);
        b.push("q", p(1, 2, None), false);
        b.keep_only(2);
        assert_eq!(b.len("q"), 0);
    }
}
