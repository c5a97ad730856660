//! The schema migrations, embedded in the binary: the files of `migrations/` (Postgres) and
//! `migrations/sqlite/`, parsed by the rules sqlx applies to a migrations directory, so the
//! versions, descriptions and checksums recorded in `_sqlx_migrations` are the ones
//! `sqlx::migrate!` produced before.
//!
//! Why not `sqlx::migrate!`: it is sqlx's only proc-macro we used, and building it compiled a
//! second, unoptimised host copy of sqlx with both drivers, the bundled SQLite, tokio, rustls and
//! ring before the daemon itself could compile (BENCHMARKS.md, "Build time"). A new migration file
//! must be added to the lists below; `embedded_migrations_match_the_directories` fails if a list
//! and its directory disagree.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;

use sqlx::error::BoxDynError;
use sqlx::migrate::{MigrateError, Migration, MigrationSource, MigrationType, Migrator};

/// `(file name, contents)` of every Postgres migration, `migrations/*.sql`.
pub(crate) const POSTGRES: &[(&str, &str)] = &[
    ("0001_init.sql", include_str!("../../../migrations/0001_init.sql")),
    ("0002_drift.sql", include_str!("../../../migrations/0002_drift.sql")),
    ("0003_rescore.sql", include_str!("../../../migrations/0003_rescore.sql")),
    ("0005_alert_outbox.sql", include_str!("../../../migrations/0005_alert_outbox.sql")),
    ("0006_retention.sql", include_str!("../../../migrations/0006_retention.sql")),
    ("0007_router_eval.sql", include_str!("../../../migrations/0007_router_eval.sql")),
    (
        "0008_routed_share_own_baseline_cascade.sql",
        include_str!("../../../migrations/0008_routed_share_own_baseline_cascade.sql"),
    ),
    ("0009_cost_per_success.sql", include_str!("../../../migrations/0009_cost_per_success.sql")),
];

/// `(file name, contents)` of every SQLite migration, `migrations/sqlite/*.sql`.
pub(crate) const SQLITE: &[(&str, &str)] = &[
    ("0001_init.sql", include_str!("../../../migrations/sqlite/0001_init.sql")),
    ("0002_drift.sql", include_str!("../../../migrations/sqlite/0002_drift.sql")),
    ("0003_rescore.sql", include_str!("../../../migrations/sqlite/0003_rescore.sql")),
    ("0005_alert_outbox.sql", include_str!("../../../migrations/sqlite/0005_alert_outbox.sql")),
    ("0006_retention.sql", include_str!("../../../migrations/sqlite/0006_retention.sql")),
    ("0007_router_eval.sql", include_str!("../../../migrations/sqlite/0007_router_eval.sql")),
    (
        "0008_routed_share_own_baseline_cascade.sql",
        include_str!("../../../migrations/sqlite/0008_routed_share_own_baseline_cascade.sql"),
    ),
    ("0009_cost_per_success.sql", include_str!("../../../migrations/sqlite/0009_cost_per_success.sql")),
];

/// A migration set compiled into the binary.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Embedded(pub &'static [(&'static str, &'static str)]);

impl Embedded {
    /// The migrations, parsed as `sqlx::migrate::resolve_blocking` parses a directory (what
    /// `migrate!` embeds): `<VERSION>_<DESCRIPTION>[.up|.down].sql`, underscores in the
    /// description read as spaces, `-- no-transaction` as the first line opts out of the
    /// migration's transaction, SHA-384 of the file as the checksum, ascending versions.
    pub(crate) fn migrations(self) -> Result<Vec<Migration>, String> {
        let mut out = Vec::with_capacity(self.0.len());
        for &(file_name, sql) in self.0 {
            let Some((version, rest)) = file_name.split_once('_').filter(|(_, rest)| rest.ends_with(".sql")) else {
                return Err(format!("embedded migration {file_name:?} is not named <VERSION>_<DESCRIPTION>.sql"));
            };
            let version: i64 =
                version.parse().map_err(|_| format!("embedded migration {file_name:?}: version is not an integer"))?;
            let migration_type = MigrationType::from_filename(rest);
            let description = rest.trim_end_matches(migration_type.suffix()).replace('_', " ");
            let no_tx = sql.starts_with("-- no-transaction");
            out.push(Migration::new(version, Cow::Owned(description), migration_type, Cow::Borrowed(sql), no_tx));
        }
        out.sort_by_key(|m| m.version);
        Ok(out)
    }
}

impl MigrationSource<'static> for Embedded {
    fn resolve(self) -> Pin<Box<dyn Future<Output = Result<Vec<Migration>, BoxDynError>> + Send + 'static>> {
        Box::pin(async move { self.migrations().map_err(BoxDynError::from) })
    }
}

/// The migrator of an embedded set, with sqlx's defaults (the same as `migrate!`'s: locking on,
/// missing applied versions an error, each migration in its own transaction unless it opts out).
pub(crate) async fn migrator(files: &'static [(&'static str, &'static str)]) -> Result<Migrator, MigrateError> {
    Migrator::new(Embedded(files)).await
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn dir(rel: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
    }

    /// Field for field what sqlx resolves from the directory, i.e. what `migrate!` embedded; a
    /// migration file missing from a list (or a stale entry) fails here.
    #[test]
    fn embedded_migrations_match_the_directories() {
        for (files, rel) in [(POSTGRES, "migrations"), (SQLITE, "migrations/sqlite")] {
            let embedded = Embedded(files).migrations().unwrap();
            let on_disk: Vec<Migration> =
                sqlx::migrate::resolve_blocking(&dir(rel)).unwrap().into_iter().map(|(m, _)| m).collect();
            let versions = |ms: &[Migration]| ms.iter().map(|m| m.version).collect::<Vec<_>>();
            assert_eq!(versions(&embedded), versions(&on_disk), "{rel}: the embedded list and the directory differ");
            for (e, d) in embedded.iter().zip(&on_disk) {
                assert_eq!(e.description, d.description, "{rel} {}", e.version);
                assert_eq!(e.migration_type, d.migration_type, "{rel} {}", e.version);
                assert_eq!(e.sql, d.sql, "{rel} {}", e.version);
                assert_eq!(e.checksum, d.checksum, "{rel} {}", e.version);
                assert_eq!(e.no_tx, d.no_tx, "{rel} {}", e.version);
            }
        }
    }

    #[test]
    fn names_that_sqlx_would_reject_are_errors() {
        assert!(Embedded(&[("init.sql", "")]).migrations().is_err());
        assert!(Embedded(&[("x_init.sql", "")]).migrations().is_err());
        assert!(Embedded(&[("0001_init.txt", "")]).migrations().is_err());
    }
}
