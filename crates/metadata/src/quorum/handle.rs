//! [`QuorumHandle`]: one voter running on a thread of its own, usable from any thread.
//!
//! The voter (its Raft node, storage and listener) runs on a single-threaded Tokio runtime
//! owned by a dedicated thread, so the broker's own runtime can be busy, blocked in a disk
//! write or not running at all (start-up, tests) without delaying heartbeats or elections.
//! Callers talk to it through a request channel and wait on plain channels with a deadline.

use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use openraft::{BasicNode, RaftMetrics};
use tokio::sync::watch;

use super::{
    status_of, ControllerHandler, KafkaHandler, NodeId, ProposeError, Quorum, QuorumConfig,
    QuorumError, QuorumEvent, QuorumStatus,
};
use crate::controller::{ControllerError, MetadataWriter};
use crate::controller_op::{ControllerOp, ForwardedOutcome, RefusalKind, WireRefusal};
use crate::image::MetadataImage;
use crate::record::MetadataRecord;

enum Request {
    Propose {
        records: Vec<MetadataRecord>,
        timeout: Duration,
        reply: std_mpsc::Sender<Result<(i64, i64), ProposeError>>,
    },
    Forward {
        op: ControllerOp,
        timeout: Duration,
        reply: std_mpsc::Sender<ForwardedOutcome>,
    },
    SetController(ControllerHandler),
    SetKafkaHandler(KafkaHandler),
    ForwardKafka {
        frame: Vec<u8>,
        timeout: Duration,
        reply: std_mpsc::Sender<Result<Vec<u8>, String>>,
    },
    LeaderStatus {
        timeout: Duration,
        reply: std_mpsc::Sender<Result<QuorumStatus, String>>,
    },
}

/// A running voter on its own thread.
pub struct QuorumHandle {
    node_id: i32,
    /// `None` once stopped.
    requests: Mutex<Option<mpsc::UnboundedSender<Request>>>,
    /// The image after every entry applied by this voter.
    image: Arc<RwLock<Arc<MetadataImage>>>,
    /// The library's view of the quorum, readable from any thread without asking the
    /// voter's thread.
    metrics: watch::Receiver<RaftMetrics<NodeId, BasicNode>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl QuorumHandle {
    /// Starts the voter on a new thread and waits until it is running (storage opened,
    /// listener bound); see [`Quorum::start`]. A quorum of one elects itself at once.
    pub fn start(
        config: QuorumConfig,
    ) -> Result<(QuorumHandle, mpsc::UnboundedReceiver<QuorumEvent>), QuorumError> {
        let node_id = config.node_id;
        let alone = config.voters.len() == 1;
        let (started_tx, started_rx) = std_mpsc::channel();
        let (requests, mut request_rx) = mpsc::unbounded_channel::<Request>();
        let thread = std::thread::Builder::new()
            .name(format!("metadata-quorum-{node_id}"))
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = started_tx.send(Err(QuorumError::Raft(format!(
                            "cannot start the quorum runtime: {e}"
                        ))));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let (quorum, events) = match Quorum::start(config).await {
                        Ok(started) => started,
                        Err(e) => {
                            let _ = started_tx.send(Err(e));
                            return;
                        }
                    };
                    if alone {
                        // No peer to race: do not wait out an election timeout.
                        let _ = quorum.raft.trigger().elect().await;
                    }
                    let image = quorum.image_cell();
                    let metrics = quorum.raft.metrics();
                    if started_tx.send(Ok((events, image, metrics))).is_err() {
                        quorum.shutdown().await;
                        return;
                    }
                    let quorum = Arc::new(quorum);
                    // Until every handle is gone: answer requests, each in its own task so
                    // a slow proposal does not hold up the others.
                    while let Some(request) = request_rx.recv().await {
                        let quorum = quorum.clone();
                        tokio::spawn(async move {
                            match request {
                                Request::Propose {
                                    records,
                                    timeout,
                                    reply,
                                } => {
                                    let _ = reply.send(quorum.propose(records, timeout).await);
                                }
                                Request::Forward { op, timeout, reply } => {
                                    let _ = reply.send(quorum.forward(op, timeout).await);
                                }
                                Request::SetController(handler) => quorum.set_controller(handler),
                                Request::SetKafkaHandler(handler) => {
                                    quorum.set_kafka_handler(handler)
                                }
                                Request::ForwardKafka {
                                    frame,
                                    timeout,
                                    reply,
                                } => {
                                    let _ = reply.send(quorum.forward_kafka(frame, timeout).await);
                                }
                                Request::LeaderStatus { timeout, reply } => {
                                    let _ = reply.send(quorum.leader_status(timeout).await);
                                }
                            }
                        });
                    }
                    match Arc::try_unwrap(quorum) {
                        Ok(quorum) => quorum.shutdown().await,
                        Err(quorum) => {
                            let _ = quorum.raft.shutdown().await;
                        }
                    }
                });
            })
            .map_err(|e| QuorumError::Raft(format!("cannot start the quorum thread: {e}")))?;
        match started_rx.recv() {
            Ok(Ok((events, image, metrics))) => Ok((
                QuorumHandle {
                    node_id,
                    requests: Mutex::new(Some(requests)),
                    image,
                    metrics,
                    thread: Mutex::new(Some(thread)),
                },
                events,
            )),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => {
                let _ = thread.join();
                Err(QuorumError::Raft(
                    "the quorum thread ended at start-up".into(),
                ))
            }
        }
    }

    pub fn node_id(&self) -> i32 {
        self.node_id
    }

    /// The image after every entry this voter applied.
    pub fn image(&self) -> Arc<MetadataImage> {
        self.image
            .read()
            .expect("quorum image lock poisoned")
            .clone()
    }

    /// [`Quorum::propose`], waiting on this thread.
    pub fn propose(
        &self,
        records: Vec<MetadataRecord>,
        timeout: Duration,
    ) -> Result<(i64, i64), ProposeError> {
        let (reply, answer) = std_mpsc::channel();
        self.send(Request::Propose {
            records,
            timeout,
            reply,
        })?;
        // The voter answers within `timeout`; the margin covers getting the answer back.
        answer
            .recv_timeout(timeout + Duration::from_secs(1))
            .map_err(|_| ProposeError::Timeout)?
    }

    /// [`Quorum::forward`], waiting on this thread.
    pub fn forward(&self, op: ControllerOp, timeout: Duration) -> ForwardedOutcome {
        let (reply, answer) = std_mpsc::channel();
        let stopped = |message: String| WireRefusal {
            kind: RefusalKind::NotController,
            message,
        };
        self.send(Request::Forward { op, timeout, reply })
            .map_err(|e| stopped(e.to_string()))?;
        answer
            .recv_timeout(timeout + Duration::from_secs(1))
            .map_err(|_| WireRefusal {
                kind: RefusalKind::Timeout,
                message: "the active controller did not answer in time".into(),
            })?
    }

    /// [`Quorum::leader_status`], waiting on this thread.
    pub fn leader_status(&self, timeout: Duration) -> Result<QuorumStatus, String> {
        let (reply, answer) = std_mpsc::channel();
        self.send(Request::LeaderStatus { timeout, reply })
            .map_err(|e| e.to_string())?;
        answer
            .recv_timeout(timeout + Duration::from_secs(1))
            .map_err(|_| "the active controller did not answer in time".to_string())?
    }

    /// [`Quorum::set_kafka_handler`].
    pub fn set_kafka_handler(&self, handler: KafkaHandler) {
        let _ = self.send(Request::SetKafkaHandler(handler));
    }

    /// [`Quorum::forward_kafka`], waiting on this thread.
    pub fn forward_kafka(&self, frame: Vec<u8>, timeout: Duration) -> Result<Vec<u8>, String> {
        let (reply, answer) = std_mpsc::channel();
        self.send(Request::ForwardKafka {
            frame,
            timeout,
            reply,
        })
        .map_err(|e| e.to_string())?;
        answer
            .recv_timeout(timeout + Duration::from_secs(1))
            .map_err(|_| "the active controller did not answer in time".to_string())?
    }

    /// [`Quorum::set_controller`].
    pub fn set_controller(&self, handler: ControllerHandler) {
        let _ = self.send(Request::SetController(handler));
    }

    /// The leader (active controller) as this voter last saw it.
    pub fn leader(&self) -> Option<i32> {
        self.status().ok().and_then(|s| s.leader)
    }

    /// The quorum as this voter sees it; fails once the voter stopped.
    pub fn status(&self) -> Result<QuorumStatus, ProposeError> {
        if self
            .requests
            .lock()
            .expect("quorum handle poisoned")
            .is_none()
        {
            return Err(ProposeError::Stopped("the quorum thread has ended".into()));
        }
        Ok(status_of(self.node_id, &self.metrics.borrow()))
    }

    /// Waits until this voter knows a leader and has applied every entry in its log (so its
    /// image holds everything committed before it started); returns the leader.
    pub fn wait_until_caught_up(&self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(status) = self.status() {
                if let Some(leader) = status.leader {
                    if status.applied_index >= status.last_index {
                        return Some(leader);
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        None
    }

    fn send(&self, request: Request) -> Result<(), ProposeError> {
        self.requests
            .lock()
            .expect("quorum handle poisoned")
            .as_ref()
            .and_then(|r| r.send(request).ok())
            .ok_or_else(|| ProposeError::Stopped("the quorum thread has ended".into()))
    }

    /// Stops the voter and waits for its thread; later calls fail with
    /// [`ProposeError::Stopped`].
    pub fn shutdown(&self) {
        // Closing the request channel ends the voter's loop.
        self.requests.lock().expect("quorum handle poisoned").take();
        let thread = self.thread.lock().expect("quorum handle poisoned").take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}

impl Drop for QuorumHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// How long the controller waits for the quorum to commit one batch.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(10);

impl MetadataWriter for Arc<QuorumHandle> {
    fn image(&self) -> Arc<MetadataImage> {
        QuorumHandle::image(self)
    }

    fn term(&self) -> u64 {
        self.metrics.borrow().current_term
    }

    fn write(&mut self, records: Vec<MetadataRecord>) -> Result<i64, ControllerError> {
        match self.propose(records, COMMIT_TIMEOUT) {
            Ok((_, last)) => Ok(last),
            Err(ProposeError::NotLeader { leader }) => {
                Err(ControllerError::NotController(match leader {
                    Some(l) => format!(
                        "node {} is not the active controller; node {l} is",
                        self.node_id
                    ),
                    None => format!(
                        "node {} is not the active controller and none is elected",
                        self.node_id
                    ),
                }))
            }
            Err(ProposeError::Timeout) => Err(ControllerError::Timeout(
                "the metadata quorum did not commit the change in time".into(),
            )),
            Err(e @ (ProposeError::Rejected(_) | ProposeError::Stopped(_))) => {
                Err(ControllerError::Internal(e.to_string()))
            }
        }
    }
}
