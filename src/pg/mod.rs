//! PostgreSQL failover: a service with `kind = "postgres"` has PostgreSQL servers as targets,
//! one primary and streaming standbys.
//!
//! How the pieces fit (each file says what it must not do):
//! - **Check** (`probe/postgres.rs`): reports the role and the replay lag in its reason and as
//!   data (`CheckResult::lag`); a
//!   standby beyond `max_lag` *fails*, and so does a non-synchronous standby when
//!   `synchronous = true`, and a fenced old primary. The decision engine is unchanged: it never
//!   makes a failing target active, so lag-gated eligibility needs no new engine input.
//! - **Board** (`board.rs`): what the probes learnt from the primary (WAL position, standbys'
//!   `sync_state`), shared by the service's probes and the actuator.
//! - **Promotion** (`actuator.rs`, the `postgres` actuator kind): fence, fast-forward the chosen
//!   standby to the most WAL any standby received, promote, wait for a write, repoint the
//!   others. `failback` defaults to `manual`: a database never fails back by itself.
//! - **Rejoin** (`rejoin.rs`, `understudy pg rejoin SERVICE TARGET`): `pg_rewind` an old primary
//!   against the current one and start it as a standby.
//! - **Lag alert** (`lagwatch.rs`): a standby's lag beyond `max_lag` opens a `replication_lag`
//!   event and notification, back under half of it resolves them (recorded by the service
//!   machine from the lag each check result carries, incident or not).
//! - `client.rs` (connections, the status query) and `config.rs` (the service and check keys).
//!
//! Why fast-forward rather than ranking standbys by WAL position in the engine: the engine only
//! hears health flips, and positions keep moving until the primary dies; ranking at the moment of
//! the decision would need a new input from the core for every check. Fast-forwarding reaches the
//! same outcome (nothing any standby received is lost) at promotion time, when positions have
//! stopped moving, and keeps the operator's priority order.
//!
//! Least privileges (no superuser): the check needs `pg_monitor`; promotion needs `EXECUTE` on
//! `pg_promote(boolean, integer)` and `pg_reload_conf()`, `pg_signal_backend`,
//! `pg_read_all_settings` and `GRANT ALTER SYSTEM ON PARAMETER primary_conninfo,
//! default_transaction_read_only` (PostgreSQL 15). `pg rejoin` runs `pg_rewind`, whose source
//! login needs `EXECUTE` on `pg_ls_dir`, `pg_stat_file`, `pg_read_binary_file` (README.md lists
//! the statements).

pub mod actuator;
pub mod board;
pub mod client;
pub mod config;
pub mod lagwatch;
pub mod rejoin;
