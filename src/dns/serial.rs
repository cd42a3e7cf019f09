//! SOA serials that never go backwards across restarts.
//!
//! Serials are time-based (`max(old + 1, now)`, see `next_serial`), so they only run ahead of
//! the clock during bursts of changes; a restart that started again from the clock could then
//! serve a lower serial than before, and a secondary would ignore the zone until the clock
//! caught up. So the server keeps a *reservation* in `data_dir/dns-serial`: a number at least
//! [`MARGIN`] above every serial it has served. At start-up every zone starts from
//! `max(reserved + 1, now)`; whenever a new serial comes within `MARGIN / 2` of the reservation,
//! a new one (`serial + MARGIN`) is written.
//!
//! Writes are atomic (a temporary file, `fsync`, `rename`, `fsync` of the directory) and done
//! by a thread of their own: a failover never waits for the disk. The one gap this leaves is a
//! crash after more than `MARGIN / 2` changes within one write's time, which no configuration
//! produces (a change is a decision or a reload). A file that cannot be read or written is
//! reported in the log and the server carries on with time-based serials.
//!
//! This module decides nothing about what is served; it only remembers a number.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

/// How far above the served serials the reservation is kept.
pub const MARGIN: u32 = 64;
/// The file name inside the data directory.
pub const FILE: &str = "dns-serial";

/// RFC 1982: `a` is after `b`.
pub fn serial_gt(a: u32, b: u32) -> bool {
    let d = a.wrapping_sub(b);
    d != 0 && d < (1 << 31)
}

/// The serial to start every zone from, given the stored reservation and the clock.
pub fn start_serial(stored: Option<u32>, now: u32) -> u32 {
    match stored {
        Some(r) => super::next_serial(r, now),
        None => now,
    }
}

/// Read the reservation; `None` when there is none or it cannot be read (reported).
pub fn load(dir: &Path) -> Option<u32> {
    let path = dir.join(FILE);
    match std::fs::read_to_string(&path) {
        Ok(s) => match s.trim().parse::<u32>() {
            Ok(n) => Some(n),
            Err(_) => {
                tracing::warn!(path = %path.display(), "dns: ignoring an unreadable serial reservation; serials start from the clock");
                None
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "dns: cannot read the serial reservation; serials start from the clock");
            None
        }
    }
}

/// Write `value` to `dir/FILE` atomically and durably.
pub fn write(dir: &Path, value: u32) -> std::io::Result<()> {
    let tmp = dir.join(format!("{FILE}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    writeln!(f, "{value}")?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, dir.join(FILE))?;
    std::fs::File::open(dir)?.sync_all()
}

/// The reservation as the server keeps it: the value last asked for and a writer thread.
pub struct Reservation {
    reserved: u32,
    tx: mpsc::Sender<u32>,
}

impl Reservation {
    /// Start the writer for `dir` and reserve above `first` (written at once, off this thread).
    pub fn start(dir: PathBuf, first: u32) -> std::io::Result<Reservation> {
        let (tx, rx) = mpsc::channel::<u32>();
        std::thread::Builder::new().name("dns-serial".into()).spawn(move || writer(&dir, &rx))?;
        let reserved = first.wrapping_add(MARGIN);
        let _ = tx.send(reserved);
        Ok(Reservation { reserved, tx })
    }

    /// Note that `serial` is about to be served; reserve further ahead when it comes close.
    pub fn note(&mut self, serial: u32) {
        if serial_gt(serial.wrapping_add(MARGIN / 2), self.reserved) {
            self.reserved = serial.wrapping_add(MARGIN);
            let _ = self.tx.send(self.reserved);
        }
    }
}

fn writer(dir: &Path, rx: &mpsc::Receiver<u32>) {
    while let Ok(mut v) = rx.recv() {
        // Only the newest value matters.
        while let Ok(next) = rx.try_recv() {
            v = next;
        }
        if let Err(e) = write(dir, v) {
            tracing::warn!(dir = %dir.display(), error = %e, "dns: cannot store the serial reservation");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_is_above_the_reservation_and_the_clock() {
        assert_eq!(start_serial(None, 1000), 1000);
        assert_eq!(start_serial(Some(2000), 1000), 2001);
        assert_eq!(start_serial(Some(500), 1000), 1000);
        assert_eq!(start_serial(Some(u32::MAX), 5), 5);
    }

    #[test]
    fn reservation_moves_ahead_of_served_serials_and_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = Reservation::start(dir.path().to_path_buf(), 1000).unwrap();
        assert_eq!(r.reserved, 1064);
        r.note(1010);
        assert_eq!(r.reserved, 1064, "far from the reservation: nothing to write");
        r.note(1040);
        assert_eq!(r.reserved, 1104);
        drop(r);
        // The writer drains and exits once the sender is gone; wait for the file.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while load(dir.path()) != Some(1104) {
            assert!(std::time::Instant::now() < deadline, "reservation not written: {:?}", load(dir.path()));
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(start_serial(load(dir.path()), 1050), 1105);
        assert!(!dir.path().join(format!("{FILE}.tmp")).exists());
    }

    #[test]
    fn a_damaged_file_falls_back_to_the_clock() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE), "garbage\n").unwrap();
        assert_eq!(load(dir.path()), None);
        assert!(write(&dir.path().join("missing"), 5).is_err());
    }
}
