//! The segmented event log with the real binary: a tiny `log_segment_size` makes the daemon
//! start a new segment (with a snapshot at its head) every few events while targets flip many
//! times a second, and it is killed with SIGKILL at random moments, rotations included. After
//! each kill: sequence numbers are contiguous across segments, every event the API had
//! acknowledged is on disk unchanged, no unfinished segment counts, and start-up from the newest
//! snapshot plus the tail gives exactly the state of folding every record. At the end,
//! `GET /api/v1/events?since=0` still returns everything (retention is the default 90 days).

use std::time::Duration;

use understudy::events::log::{EventLog, read_since};
use understudy::events::snapshot::Folds;

use crate::support::*;

fn segment_count(data: &std::path::Path) -> usize {
    std::fs::read_dir(data).unwrap().flatten().filter(|e| e.file_name().to_string_lossy().starts_with("events") && e.file_name().to_string_lossy().ends_with(".log")).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_rotation_loses_nothing_acknowledged_and_never_duplicates_a_seq() {
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("up");
    let api = api_addr();
    let data = dir.path().join("data");
    let cfg = flappy_config(&data, api, &flag, "log_segment_size = \"2KiB\"\n");
    let mut d = Daemon::start(dir.path(), &cfg, api).await;
    let toggler = toggle_flag(&flag, 3000, Duration::from_millis(60));
    let first_segment = data.join("events.log");
    let mut tmp_seen = 0;
    for round in 0..6 {
        let delay = rand::random_range(300..1500u64);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        let acknowledged = d.events().await;
        d.kill9();
        // A kill during a rotation may leave the unfinished segment behind; it must not count.
        tmp_seen += std::fs::read_dir(&data).unwrap().flatten().filter(|e| e.file_name().to_string_lossy().ends_with(".tmp")).count();
        let all = read_since(&first_segment, 0, usize::MAX).expect("the segments read back");
        let seqs: Vec<u64> = all.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, (1..=all.len() as u64).collect::<Vec<_>>(), "round {round}: sequence numbers contiguous, none twice");
        assert!(all.len() >= acknowledged.len(), "round {round}: lost events ({} on disk, {} acknowledged)", all.len(), acknowledged.len());
        for (r, a) in all.iter().zip(&acknowledged) {
            assert_eq!(r.seq, a["seq"].as_u64().unwrap());
            assert_eq!(serde_json::to_value(&r.event).unwrap(), a["event"], "round {round}: event {} changed", r.seq);
        }
        let (log, history, report) = EventLog::open(&data).expect("log reopens");
        assert!(report.skipped_lines.is_empty(), "round {round}: damaged lines {:?}", report.skipped_lines);
        let mut state = history.state.clone();
        for r in &history.records {
            state.apply(r);
        }
        let mut full = Folds::default();
        for r in &all {
            full.apply(r);
        }
        assert!(state == full, "round {round}: snapshot (seq {}) + {} records differs from folding all {} records", history.from_seq, history.records.len(), all.len());
        assert_eq!(log.next_seq(), all.len() as u64 + 1);
        drop(log);
        d.restart().await;
    }
    toggler.abort();
    let segments = segment_count(&data);
    assert!(segments > 5, "the log rotated: {segments} segments");
    // Everything is still served, from every segment.
    let disk = read_since(&first_segment, 0, usize::MAX).unwrap();
    let served = d.events().await;
    assert!(served.len() >= disk.len().min(10_000) && !served.is_empty());
    for (a, r) in served.iter().zip(&disk) {
        assert_eq!(a["seq"].as_u64(), Some(r.seq));
    }
    let mid = disk.len() as u64 / 3;
    let from_mid = d.get(&format!("/api/v1/events?since={mid}&limit=5")).await;
    let got: Vec<u64> = from_mid["events"].as_array().unwrap().iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(got, (mid + 1..=mid + 5).collect::<Vec<_>>(), "since= in an old segment");
    println!("{segments} segments, {} events, {tmp_seen} kills left an unfinished segment", disk.len());
}
