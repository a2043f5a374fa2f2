//! Three `gregor broker` processes on 127.0.0.1 forming one cluster over the metadata quorum
//! (every node broker and controller): a topic created at one broker is visible at every
//! broker and its partitions are spread over them; records produced through any broker reach
//! each partition's leader; SIGKILL of the active controller elects another and CreateTopics
//! works again (the time is printed); the killed node restarts and catches up. A broker that
//! stops heartbeating (paused with SIGSTOP, or SIGKILLed) is fenced after the session timeout
//! and unfenced when it heartbeats again; a cluster stopped as a whole restarts with all its
//! metadata. Brokers without the controller role follow the metadata log as observers and
//! take admin requests like any broker; with controller-only nodes (Kafka's isolated mode)
//! the brokers reach the controllers only through the quorum, and SIGKILL of the active
//! controller is survived the same way. Every process is killed by its guard, on every path.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use support::cluster::*;
use support::BrokerProcess;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_share_metadata_and_survive_the_controller_dying() {
    let root = tempfile::tempdir().unwrap();
    let (nodes, voters) = nodes(3);
    let started = Instant::now();
    let mut procs: Vec<BrokerProcess> = nodes
        .iter()
        .map(|n| spawn(root.path(), n, &voters))
        .collect();
    for p in &mut procs {
        p.wait_listening();
    }
    eprintln!("3 nodes serving after {:?}", started.elapsed());
    let addr = |i: usize| format!("127.0.0.1:{}", nodes[i].port);

    // One cluster id, the same at every broker.
    let ids: Vec<String> = (0..3)
        .map(|i| {
            let b = addr(i);
            wait_for("cluster info", || {
                cluster_info(&b)?["cluster_id"].as_str().map(String::from)
            })
        })
        .collect();
    assert!(ids.windows(2).all(|w| w[0] == w[1]), "{ids:?}");
    assert_eq!(ids[0].len(), 22);

    // DescribeQuorum through `gregor cluster quorum`: the leader is the controller, three
    // voters, all caught up once the cluster is idle.
    let b = addr(0);
    let quorum = tokio::task::spawn_blocking(move || {
        wait_for("the quorum to be caught up", || {
            let out = Command::new(env!("CARGO_BIN_EXE_gregor"))
                .args(["cluster", "quorum", "--format", "json", "--brokers", &b])
                .output()
                .ok()?;
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            let voters = v["voters"].as_array()?;
            (voters.len() == 3 && voters.iter().all(|x| x["lag"] == 0)).then_some(v)
        })
    })
    .await
    .unwrap();
    assert_eq!(
        quorum["leader"].as_i64().map(|l| l as i32),
        controller_id(&addr(0))
    );
    assert!(quorum["epoch"].as_i64().unwrap() >= 1, "{quorum}");
    let text = Command::new(env!("CARGO_BIN_EXE_gregor"))
        .args(["cluster", "quorum", "--brokers", &addr(2)])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("Leader:") && text.contains("LOG-END"),
        "{text}"
    );

    // Created at node 2, visible at all three, partitions on every broker.
    create_topic(&addr(1), "spread", 6).await.unwrap();
    let mut seen = Vec::new();
    for i in 0..3 {
        let b = addr(i);
        seen.push(
            tokio::task::spawn_blocking(move || wait_for("the topic", || leaders(&b, "spread")))
                .await
                .unwrap(),
        );
    }
    assert!(
        seen.windows(2).all(|w| w[0] == w[1]),
        "every broker tells the same leaders: {seen:?}"
    );
    let mut led: Vec<i32> = seen[0].clone();
    led.sort();
    led.dedup();
    assert_eq!(
        led,
        vec![1, 2, 3],
        "partitions are spread over the brokers: {:?}",
        seen[0]
    );

    // Records through node 3 land at each partition's leader and read back through node 1.
    let producer: FutureProducer = client(&addr(2)).set("acks", "all").create().unwrap();
    for p in 0..6 {
        producer
            .send(
                FutureRecord::<(), _>::to("spread")
                    .partition(p)
                    .payload(&format!("v{p}")),
                WAIT,
            )
            .await
            .unwrap();
    }
    let b = addr(0);
    let read = tokio::task::spawn_blocking(move || {
        let c: BaseConsumer = client(&b)
            .set("group.id", "cluster-reader")
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        for p in 0..6 {
            tpl.add_partition_offset("spread", p, Offset::Beginning)
                .unwrap();
        }
        c.assign(&tpl).unwrap();
        let mut values = Vec::new();
        let deadline = Instant::now() + WAIT;
        while values.len() < 6 && Instant::now() < deadline {
            if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
                values.push(String::from_utf8_lossy(m.payload().unwrap()).into_owned());
            }
        }
        values.sort();
        values
    })
    .await
    .unwrap();
    assert_eq!(read, (0..6).map(|p| format!("v{p}")).collect::<Vec<_>>());

    // SIGKILL the active controller; another is elected and CreateTopics works again.
    let b = addr(0);
    let controller =
        tokio::task::spawn_blocking(move || wait_for("a controller", || controller_id(&b)))
            .await
            .unwrap();
    let victim = nodes.iter().position(|n| n.id == controller).unwrap();
    let survivor = (victim + 1) % 3;
    let killed_at = Instant::now();
    procs[victim].kill();
    let deadline = Instant::now() + WAIT;
    loop {
        match create_topic(&addr(survivor), "after-failover", 3).await {
            Ok(()) => break,
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "no CreateTopics after the controller died: {e}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    let failover = killed_at.elapsed();
    eprintln!("controller {controller} SIGKILLed: CreateTopics succeeded again after {failover:?}");
    let b = addr(survivor);
    let new_controller = tokio::task::spawn_blocking(move || {
        wait_for("a new controller", || {
            controller_id(&b).filter(|c| *c != controller)
        })
    })
    .await
    .unwrap();
    assert_ne!(new_controller, controller);

    // The killed node comes back with its data and catches up.
    procs[victim] = spawn(root.path(), &nodes[victim], &voters);
    procs[victim].wait_listening();
    let b = addr(victim);
    let back = tokio::task::spawn_blocking(move || {
        wait_for("the restarted node to catch up", || {
            leaders(&b, "after-failover")
        })
    })
    .await
    .unwrap();
    assert_eq!(back.len(), 3);

    // A data directory of another cluster is refused, saying why.
    procs[victim].kill();
    let node_dir = root.path().join(format!("node-{}", nodes[victim].id));
    let props = std::fs::read_to_string(node_dir.join("meta.properties")).unwrap();
    assert!(props.contains(&format!("cluster.id={}", ids[0])), "{props}");
    std::fs::write(
        node_dir.join("meta.properties"),
        props.replace(&ids[0], "AAAAAAAAAAAAAAAAAAAAAA"),
    )
    .unwrap();
    let mut cmd = Command::new("timeout");
    cmd.arg("30")
        .arg(env!("CARGO_BIN_EXE_gregor"))
        .arg("broker");
    cmd.args(["--override", &format!("log.dirs={}", node_dir.display())]);
    for o in overrides(&nodes[victim], &voters) {
        cmd.arg("--override").arg(o);
    }
    let out = cmd.output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("INCONSISTENT_CLUSTER_ID"), "{err}");
    drop(procs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_stops_heartbeating_is_fenced_and_the_cluster_restarts_whole() {
    const SESSION_MS: u64 = 2000;
    let root = tempfile::tempdir().unwrap();
    let (nodes, voters) = nodes(3);
    let session = format!("broker.session.timeout.ms={SESSION_MS}");
    let extra = [session.as_str(), "broker.heartbeat.interval.ms=200"];
    let start_all = |procs: &mut Vec<BrokerProcess>| {
        *procs = nodes
            .iter()
            .map(|n| spawn_with(root.path(), n, &voters, &extra))
            .collect();
        for p in procs.iter_mut() {
            p.wait_listening();
        }
    };
    let mut procs = Vec::new();
    start_all(&mut procs);
    let addr = |i: usize| format!("127.0.0.1:{}", nodes[i].port);
    wait_live(addr(0), vec![1, 2, 3]).await;
    create_topic(&addr(0), "fencing", 6).await.unwrap();

    // A Kafka client pointed at a CONTROLLER listener gets no metadata; the node goes on.
    let controller_listener = format!("127.0.0.1:{}", nodes[0].controller_port);
    let refused = tokio::task::spawn_blocking(move || {
        let c: BaseConsumer = client(&controller_listener).create().unwrap();
        c.fetch_metadata(None, Duration::from_secs(2)).map(|_| ())
    })
    .await
    .unwrap();
    assert!(
        refused.is_err(),
        "the CONTROLLER listener serves no client API"
    );
    assert_eq!(live_brokers(&addr(0)), Some(vec![1, 2, 3]));

    // Pause a broker that is not the controller: fenced once its session runs out.
    let b = addr(0);
    let controller =
        tokio::task::spawn_blocking(move || wait_for("a controller", || controller_id(&b)))
            .await
            .unwrap();
    let victim = nodes.iter().position(|n| n.id != controller).unwrap();
    let victim_id = nodes[victim].id;
    let survivor = nodes.iter().position(|n| n.id == controller).unwrap();
    let others: Vec<i32> = nodes
        .iter()
        .map(|n| n.id)
        .filter(|id| *id != victim_id)
        .collect();
    procs[victim].signal(libc::SIGSTOP);
    let fenced_after = wait_live(addr(survivor), others.clone()).await;
    eprintln!("broker {victim_id} paused: fenced after {fenced_after:?} (session {SESSION_MS} ms)");
    assert!(
        fenced_after >= Duration::from_millis(SESSION_MS / 2),
        "not fenced before its session could expire: {fenced_after:?}"
    );
    // Its partitions have no live leader, and its replicas are offline.
    let b = addr(survivor);
    let offline = tokio::task::spawn_blocking(move || {
        let c: BaseConsumer = client(&b).create().unwrap();
        let meta = c
            .fetch_metadata(Some("fencing"), Duration::from_secs(5))
            .unwrap();
        meta.topics()[0]
            .partitions()
            .iter()
            .filter(|p| p.leader() == -1)
            .count()
    })
    .await
    .unwrap();
    assert!(offline >= 1, "the paused broker led a partition of six");
    // Only two brokers are live: three replicas cannot be placed.
    let refused = create_topic_rf(&addr(survivor), "three-replicas", 1, 3).await;
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.contains("replication factor")),
        "{refused:?}"
    );
    procs[victim].signal(libc::SIGCONT);
    let back_after = wait_live(addr(survivor), vec![1, 2, 3]).await;
    eprintln!("broker {victim_id} resumed: unfenced after {back_after:?}");

    // SIGKILL: fenced after the session timeout; restarted, it registers anew and is live.
    procs[victim].kill();
    let fenced_after = wait_live(addr(survivor), others).await;
    eprintln!("broker {victim_id} SIGKILLed: fenced after {fenced_after:?}");
    procs[victim] = spawn_with(root.path(), &nodes[victim], &voters, &extra);
    procs[victim].wait_listening();
    wait_live(addr(survivor), vec![1, 2, 3]).await;
    create_topic_rf(&addr(victim), "three-replicas", 3, 3)
        .await
        .unwrap();

    // The whole cluster stopped and started again keeps every topic and the cluster id.
    let id_before = cluster_info(&addr(0)).unwrap()["cluster_id"].clone();
    for p in procs.iter_mut() {
        p.terminate();
    }
    start_all(&mut procs);
    wait_live(addr(1), vec![1, 2, 3]).await;
    for topic in ["fencing", "three-replicas"] {
        let b = addr(2);
        let t = topic.to_string();
        let found = tokio::task::spawn_blocking(move || {
            wait_for("topics after the restart", || leaders(&b, &t))
        })
        .await
        .unwrap();
        assert_eq!(found.len(), if topic == "fencing" { 6 } else { 3 });
    }
    assert_eq!(cluster_info(&addr(1)).unwrap()["cluster_id"], id_before);
    drop(procs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brokers_without_the_controller_role_observe_the_metadata_log() {
    let root = tempfile::tempdir().unwrap();
    let (all, _) = nodes(5);
    let voters = voters_of(&all[..3]);
    let extra = [
        "broker.session.timeout.ms=2000",
        "broker.heartbeat.interval.ms=200",
    ];
    let start = |i: usize| {
        if i < 3 {
            spawn_with(root.path(), &all[i], &voters, &extra)
        } else {
            spawn_observer(root.path(), &all[i], &voters, &extra)
        }
    };
    let mut procs: Vec<BrokerProcess> = (0..5).map(start).collect();
    for p in procs.iter_mut() {
        p.wait_listening();
    }
    let addr = |i: usize| format!("127.0.0.1:{}", all[i].port);
    wait_live(addr(3), vec![1, 2, 3, 4, 5]).await;

    // Created at an observer (forwarded to the active controller), seen at all five, with
    // partitions on the observers too.
    create_topic(&addr(4), "observed", 10).await.unwrap();
    let mut seen = Vec::new();
    for i in 0..5 {
        let b = addr(i);
        seen.push(
            tokio::task::spawn_blocking(move || wait_for("the topic", || leaders(&b, "observed")))
                .await
                .unwrap(),
        );
    }
    assert!(seen.windows(2).all(|w| w[0] == w[1]), "{seen:?}");
    let mut led = seen[0].clone();
    led.sort();
    led.dedup();
    assert_eq!(led, vec![1, 2, 3, 4, 5], "{:?}", seen[0]);

    // DescribeQuorum: three voters, two observers, all caught up.
    let b = addr(0);
    let quorum = tokio::task::spawn_blocking(move || {
        wait_for("observers caught up", || {
            let out = Command::new(env!("CARGO_BIN_EXE_gregor"))
                .args(["cluster", "quorum", "--format", "json", "--brokers", &b])
                .output()
                .ok()?;
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            let ids = |k: &str| -> Option<Vec<i64>> {
                v[k].as_array()?.iter().map(|x| x["id"].as_i64()).collect()
            };
            let caught_up = v["observers"].as_array()?.iter().all(|x| x["lag"] == 0);
            (ids("voters")? == vec![1, 2, 3] && ids("observers")? == vec![4, 5] && caught_up)
                .then_some(v)
        })
    })
    .await
    .unwrap();
    assert!(quorum["leader"].as_i64().unwrap() <= 3, "{quorum}");

    // An observer SIGKILLed is fenced; topics created meanwhile reach it after its restart.
    procs[3].kill();
    wait_live(addr(0), vec![1, 2, 3, 5]).await;
    create_topic(&addr(0), "while-away", 2).await.unwrap();
    procs[3] = start(3);
    procs[3].wait_listening();
    wait_live(addr(0), vec![1, 2, 3, 4, 5]).await;
    let b = addr(3);
    let back = tokio::task::spawn_blocking(move || {
        wait_for("the observer to catch up", || leaders(&b, "while-away"))
    })
    .await
    .unwrap();
    assert_eq!(back.len(), 2);
    drop(procs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_only_nodes_serve_the_quorum_and_brokers_serve_clients() {
    let root = tempfile::tempdir().unwrap();
    let (all, _) = nodes(5);
    let voters = voters_of(&all[..3]);
    let start = |i: usize| {
        if i < 3 {
            let n = &all[i];
            let o = [
                format!("node.id={}", n.id),
                "process.roles=controller".to_string(),
                format!("listeners=CONTROLLER://127.0.0.1:{}", n.controller_port),
                format!("controller.quorum.voters={voters}"),
            ];
            let refs: Vec<&str> = o.iter().map(String::as_str).collect();
            BrokerProcess::spawn(
                &root.path().join(format!("node-{}", n.id)),
                n.controller_port,
                &refs,
            )
        } else {
            spawn_observer(root.path(), &all[i], &voters, &[])
        }
    };
    let mut procs: Vec<BrokerProcess> = (0..5).map(start).collect();
    for p in procs.iter_mut() {
        p.wait_listening();
    }
    let addr = |i: usize| format!("127.0.0.1:{}", all[i].port);
    wait_live(addr(3), vec![4, 5]).await;
    // Clients are pointed at a live broker for admin requests, never at a controller.
    let b = addr(3);
    let named = tokio::task::spawn_blocking(move || controller_id(&b))
        .await
        .unwrap();
    assert!(matches!(named, Some(4 | 5)), "{named:?}");
    create_topic(&addr(3), "isolated", 4).await.unwrap();
    let b = addr(4);
    let leaders_at_5 =
        tokio::task::spawn_blocking(move || wait_for("the topic", || leaders(&b, "isolated")))
            .await
            .unwrap();
    assert!(
        leaders_at_5.iter().all(|l| [4, 5].contains(l)),
        "{leaders_at_5:?}"
    );

    // DescribeQuorum at a broker is answered with the controllers' view.
    let b = addr(4);
    let leader = tokio::task::spawn_blocking(move || {
        wait_for("the quorum", || {
            let out = Command::new(env!("CARGO_BIN_EXE_gregor"))
                .args(["cluster", "quorum", "--format", "json", "--brokers", &b])
                .output()
                .ok()?;
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            let observers: Vec<i64> = v["observers"]
                .as_array()?
                .iter()
                .filter_map(|x| x["id"].as_i64())
                .collect();
            (v["voters"].as_array()?.len() == 3 && observers == vec![4, 5])
                .then(|| v["leader"].as_i64())
                .flatten()
        })
    })
    .await
    .unwrap() as usize;
    assert!((1..=3).contains(&leader));

    // SIGKILL the active controller: the brokers keep taking admin requests.
    let killed_at = Instant::now();
    procs[leader - 1].kill();
    let deadline = Instant::now() + WAIT;
    while let Err(e) = create_topic(&addr(4), "after-controller-died", 2).await {
        assert!(
            Instant::now() < deadline,
            "no CreateTopics after the controller died: {e}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "controller-only node {leader} SIGKILLed: CreateTopics at a broker succeeded after {:?}",
        killed_at.elapsed()
    );
    assert_eq!(
        live_brokers(&addr(3)),
        Some(vec![4, 5]),
        "no broker was fenced meanwhile"
    );
    drop(procs);
}
