//! Names of the files and directories that make up a game root.
//!
//! ```text
//! <game dir>/<id>/                  game root (id is a catalog id)
//!     version.ini                   download sentinel: present and regular ⇔ downloaded
//!     *.zip, *.rar, ...             downloaded files (the manifest)
//!     local/                        the installed game ⇔ installed
//!         .lanspread_owned          marker: lanspread installed this tree
//!         .lanspread_files.json     record of the files the archives produced
//!     .lanspread.json               intent log of the running transaction
//!     .local.installing/            staging of an install (owned: has .lanspread_owned)
//!     .local.backup/                previous install during an update/uninstall (owned)
//!     .version.ini.tmp              sentinel being committed
//!     .version.ini.discarded        old sentinel parked during a download
//!     .lanspread.download           download journal (verified chunks, for resume)
//! <game dir>/.lanspread-kept/<id>-<time>/   the user's files an update or
//!                                   uninstall moved out of local/ (never deleted)
//! ```

/// The download sentinel.
pub const VERSION_INI: &str = "version.ini";
/// The installed tree.
pub const LOCAL: &str = "local";
/// Staging directory of an install.
pub const INSTALLING: &str = ".local.installing";
/// Previous install, kept until an update or uninstall is committed.
pub const BACKUP: &str = ".local.backup";
/// Marker proving a directory was created by lanspread.
pub const OWNED_MARKER: &str = ".lanspread_owned";
/// Record of the files an install's archives produced (inside `local/`, next
/// to the marker): what an update or uninstall may delete without asking.
pub const RECORD: &str = ".lanspread_files.json";
/// Directory of the game directory where user files are kept.
pub const KEPT: &str = ".lanspread-kept";
/// Per-root intent log.
pub const INTENT: &str = ".lanspread.json";
/// Temporary file used to write the intent log atomically.
pub const INTENT_TMP: &str = ".lanspread.json.tmp";
/// Sentinel being committed.
pub const VERSION_TMP: &str = ".version.ini.tmp";
/// Old sentinel parked while a download runs.
pub const VERSION_DISCARDED: &str = ".version.ini.discarded";
/// Download journal (which chunks are verified), for resume.
pub const JOURNAL: &str = ".lanspread.download";
/// Temporary file used to write the journal atomically.
pub const JOURNAL_TMP: &str = ".lanspread.download.tmp";
/// On-disk scan index, at the top of the game directory.
pub const INDEX: &str = ".lanspread-index.bin";
/// Temporary file for the index.
pub const INDEX_TMP: &str = ".lanspread-index.bin.tmp";

/// Root-level names that belong to lanspread's own machinery and never
/// appear in a manifest.
pub const CONTROL_NAMES: &[&str] =
    &[LOCAL, INSTALLING, BACKUP, OWNED_MARKER, RECORD, INTENT, INTENT_TMP, VERSION_TMP, VERSION_DISCARDED, JOURNAL, JOURNAL_TMP];

/// Names lanspread writes at the top of `local/`; an archive may not
/// produce them.
pub const LOCAL_CONTROL_NAMES: &[&str] = &[OWNED_MARKER, RECORD];

/// Whether a root-level entry name is part of lanspread's machinery.
pub fn is_control_name(name: &str) -> bool {
    CONTROL_NAMES.contains(&name)
}

/// Longest `version.ini` we accept (it holds a version string).
pub const MAX_VERSION_INI_LEN: u64 = 4096;
