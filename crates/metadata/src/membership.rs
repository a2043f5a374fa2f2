//! Broker sessions as the active controller keeps them: when each registered broker was last
//! heard from. A broker whose session runs out (`broker.session.timeout.ms` without a
//! heartbeat) is fenced; its next heartbeat, once it has caught up with the metadata log,
//! unfences it. Kafka keeps these times in the controller's memory only, and so does this:
//! they are not in the metadata log, and a controller that takes over starts every session
//! afresh at the moment it became leader (so no broker is fenced for the time the election
//! took). Likewise, a controller whose own session checks stopped for more than half a
//! session (the process was paused or starved) starts every session afresh when they run
//! again: it cannot tell which brokers were silent and which it just did not hear.
//!
//! Pure: time is passed in, so the rules are tested without sleeping.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::image::MetadataImage;

/// The last contact of each broker, in one term of the quorum.
#[derive(Debug)]
pub struct BrokerSessions {
    session_timeout: Duration,
    /// The quorum term the contacts below were heard in.
    term: u64,
    /// When this controller began `term`: the contact of every broker not heard since.
    term_start: Instant,
    /// Last heartbeat (or registration) per broker id in `term`.
    last_contact: HashMap<i32, Instant>,
    /// When `expired` last ran.
    last_check: Option<Instant>,
}

impl BrokerSessions {
    pub fn new(session_timeout: Duration, now: Instant) -> BrokerSessions {
        BrokerSessions {
            session_timeout,
            term: 0,
            term_start: now,
            last_contact: HashMap::new(),
            last_check: None,
        }
    }

    /// Forgets every contact when the quorum moved to another term: they were heard by
    /// whoever led then, not necessarily this node.
    fn enter_term(&mut self, term: u64, now: Instant) {
        if term != self.term {
            self.term = term;
            self.term_start = now;
            self.last_contact.clear();
        }
    }

    /// Broker `node_id` was heard from at `now`, in `term`.
    pub fn touch(&mut self, node_id: i32, term: u64, now: Instant) {
        self.enter_term(term, now);
        self.last_contact.insert(node_id, now);
    }

    /// Whether this controller heard broker `node_id` within the session timeout, in this
    /// term: another process registering the same node id is then refused. (A registration
    /// only inherited from an earlier term, or from before a restart, does not count.)
    pub fn heard_recently(&mut self, node_id: i32, term: u64, now: Instant) -> bool {
        self.enter_term(term, now);
        self.last_contact
            .get(&node_id)
            .is_some_and(|last| now.saturating_duration_since(*last) <= self.session_timeout)
    }

    /// Whether broker `node_id`'s session is still valid: heard within the session timeout,
    /// counting the start of this term as a contact.
    pub fn has_valid_session(&mut self, node_id: i32, term: u64, now: Instant) -> bool {
        self.enter_term(term, now);
        let last = self
            .last_contact
            .get(&node_id)
            .copied()
            .unwrap_or(self.term_start);
        now.saturating_duration_since(last) <= self.session_timeout
    }

    /// The live brokers of `image` not heard from for longer than `after` (but maybe still
    /// within their session), or not at all in this term, with their broker epochs: the ones
    /// worth asking whether their process is still there. (A controller that just took over
    /// has heard nobody yet; a broker that died with the old controller is found at once
    /// rather than `after` into the term.)
    pub fn overdue(
        &mut self,
        image: &MetadataImage,
        term: u64,
        now: Instant,
        after: Duration,
    ) -> Vec<(i32, i64)> {
        self.enter_term(term, now);
        image
            .live_brokers()
            .filter(|b| {
                self.last_contact
                    .get(&b.node_id)
                    .is_none_or(|last| now.saturating_duration_since(*last) > after)
            })
            .map(|b| (b.node_id, b.epoch))
            .collect()
    }

    /// The live (unfenced) brokers of `image` whose session ran out at `now`, with their
    /// broker epochs.
    pub fn expired(&mut self, image: &MetadataImage, term: u64, now: Instant) -> Vec<(i32, i64)> {
        let gap = self
            .last_check
            .replace(now)
            .map(|last| now.saturating_duration_since(last));
        if gap.is_some_and(|gap| gap > self.session_timeout / 2) {
            tracing::warn!(
                ?gap,
                "the session checks did not run for a while: every broker session starts afresh"
            );
            self.term_start = now;
            self.last_contact.clear();
        }
        let live: Vec<(i32, i64)> = image.live_brokers().map(|b| (b.node_id, b.epoch)).collect();
        live.into_iter()
            .filter(|(id, _)| !self.has_valid_session(*id, term, now))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{MetadataBatch, MetadataRecord};

    fn image_with_live_brokers(ids: &[i32]) -> MetadataImage {
        let mut records = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            records.push(MetadataRecord::RegisterBroker {
                node_id: *id,
                host: "127.0.0.1".into(),
                port: 9000 + *id as u16,
                rack: None,
                incarnation_id: uuid::Uuid::new_v4(),
                broker_epoch: Some(i as i64),
                fenced: false,
            });
        }
        let batch = MetadataBatch {
            base_offset: 0,
            epoch: 1,
            records,
        };
        MetadataImage::default().apply_batch(&batch).unwrap().0
    }

    #[test]
    fn a_silent_broker_expires_after_the_session_timeout() {
        let t0 = Instant::now();
        let timeout = Duration::from_secs(9);
        let image = image_with_live_brokers(&[1, 2]);
        let mut sessions = BrokerSessions::new(timeout, t0);
        sessions.touch(1, 1, t0);
        sessions.touch(2, 1, t0);
        sessions.touch(1, 1, t0 + Duration::from_secs(8));
        assert!(sessions
            .expired(&image, 1, t0 + Duration::from_secs(9))
            .is_empty());
        assert_eq!(
            sessions.expired(&image, 1, t0 + Duration::from_secs(10)),
            vec![(2, 1)],
            "broker 2 was last heard at t0"
        );
    }

    #[test]
    fn a_controller_that_was_paused_does_not_fence_everyone_at_once() {
        let t0 = Instant::now();
        let image = image_with_live_brokers(&[1, 2]);
        let mut sessions = BrokerSessions::new(Duration::from_secs(2), t0);
        sessions.touch(1, 1, t0);
        sessions.touch(2, 1, t0);
        assert!(sessions.expired(&image, 1, t0).is_empty());
        // Paused for 10 s: nobody could be heard, nobody is fenced for it.
        let resumed = t0 + Duration::from_secs(10);
        assert!(sessions.expired(&image, 1, resumed).is_empty());
        // Broker 1 heartbeats again, broker 2 stays silent: it expires a session later.
        let mut at = resumed;
        while at < resumed + Duration::from_millis(2100) {
            at += Duration::from_millis(250);
            sessions.touch(1, 1, at);
            if at > resumed + Duration::from_secs(2) {
                assert_eq!(sessions.expired(&image, 1, at), vec![(2, 1)]);
            } else {
                assert!(sessions.expired(&image, 1, at).is_empty());
            }
        }
    }

    #[test]
    fn a_broker_not_heard_in_a_new_term_is_worth_probing_at_once() {
        let t0 = Instant::now();
        let image = image_with_live_brokers(&[1, 2]);
        let mut sessions = BrokerSessions::new(Duration::from_secs(9), t0);
        let after = Duration::from_secs(1);
        sessions.touch(1, 3, t0);
        assert_eq!(sessions.overdue(&image, 3, t0, after), vec![(2, 1)]);
        sessions.touch(2, 3, t0);
        assert!(sessions.overdue(&image, 3, t0 + after, after).is_empty());
        assert_eq!(
            sessions.overdue(&image, 3, t0 + after * 2, after),
            vec![(1, 0), (2, 1)]
        );
    }

    #[test]
    fn a_new_term_starts_every_session_afresh() {
        let t0 = Instant::now();
        let image = image_with_live_brokers(&[1, 2]);
        let mut sessions = BrokerSessions::new(Duration::from_secs(9), t0);
        sessions.touch(2, 1, t0);
        // This node becomes leader in term 5 much later: nobody is expired at once.
        let later = t0 + Duration::from_secs(60);
        assert!(sessions.expired(&image, 5, later).is_empty());
        assert!(sessions.has_valid_session(2, 5, later + Duration::from_secs(9)));
        assert!(!sessions.has_valid_session(2, 5, later + Duration::from_secs(10)));
        assert!(
            !sessions.heard_recently(2, 5, later),
            "the grace of a new term is not a contact"
        );
        sessions.touch(2, 5, later);
        assert!(sessions.heard_recently(2, 5, later + Duration::from_secs(9)));
    }
}
