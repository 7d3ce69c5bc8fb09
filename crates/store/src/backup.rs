//! Copies and checks of a database file, for the `backup` and `restore`
//! commands: they work on a file a server may be using, so they open
//! their own connections and never go through a [`Store`].

use std::path::Path;
use std::time::Duration;

use rusqlite::Connection;

use crate::engine::query_row;
use crate::error::SqlResult;
use crate::{Error, ErrorKind, Result, Store};

impl Store {
    /// Writes a consistent copy of the database at `db` to `to` (which must
    /// not exist) while a server may be using it: `VACUUM INTO` reads one
    /// snapshot, so writes that land meanwhile are either wholly in the copy
    /// or not at all. The copy is made readable by its owner only, synced to
    /// disk, and checked with `PRAGMA integrity_check`. Returns its size.
    pub fn backup(db: &Path, to: &Path) -> Result<u64> {
        use std::os::unix::fs::OpenOptionsExt as _;
        if !db.exists() {
            return Err(Error::new(ErrorKind::Io, format!("no database at {}", db.display())));
        }
        // An empty file is a valid target; making it first sets its mode.
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(to)
            .map_err(|e| Error::io(format!("creating {}", to.display()), e))?;
        let written = (|| {
            let conn = open_existing(db)?;
            let target =
                to.to_str().ok_or_else(|| Error::new(ErrorKind::Other, format!("{} is not UTF-8", to.display())))?;
            conn.execute("VACUUM INTO ?1", [target]).sql()?;
            drop(conn);
            std::fs::File::open(to)
                .and_then(|f| f.sync_all())
                .map_err(|e| Error::io(format!("syncing {}", to.display()), e))?;
            Self::integrity_check(to)
        })();
        if let Err(e) = written {
            // Never leave a partial copy that looks like a backup.
            let _ = std::fs::remove_file(to);
            return Err(e);
        }
        std::fs::metadata(to)
            .map(|m| m.len())
            .map_err(|e| Error::io(format!("reading the size of {}", to.display()), e))
    }

    /// Runs `PRAGMA integrity_check` on the database at `path`; an error
    /// names what is wrong.
    pub fn integrity_check(path: &Path) -> Result<()> {
        let conn = open_existing(path)?;
        let result: String = query_row(&conn, "PRAGMA integrity_check", [], |r| r.get(0))?;
        if result == "ok" {
            Ok(())
        } else {
            Err(Error::new(ErrorKind::Corrupt, format!("integrity check of {}: {result}", path.display())))
        }
    }
}

/// Opens an existing database, read-write without create: a WAL database
/// read by a second process needs its shared-memory file, which a
/// read-only open cannot make. It waits longer than a server's writes do
/// for a busy database, since a copy may wait behind them.
fn open_existing(path: &Path) -> Result<Connection> {
    let open = || {
        let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE)?;
        conn.busy_timeout(Duration::from_secs(30))?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        Ok(conn)
    };
    open().sql()
}
