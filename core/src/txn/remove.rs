//! Removal of a game's downloaded files (the whole game root).
//!
//! Deliberately separate from uninstall. Accepted only for a catalog id
//! (hence a direct child of the game directory), refused while the game is
//! installed, while any intent log or staging directory is present, and
//! unless a regular root-level `version.ini` proves this is a game root.
//!
//! Steps: intent `remove/removing` (its rename is **the commit point**:
//! from there a failure or crash is rolled forward); remove `version.ini` and fsync the
//! root, so a partial root never looks downloaded; delete every other entry;
//! remove the intent; remove the root; fsync the game directory.

use crate::catalog::Catalog;
use crate::game::GameId;
use crate::layout;
use crate::txn::error::TxnError;
use crate::txn::flow::{kind_name, write_intent, Decision, Flow, Planner, RootFacts, Step};
use crate::txn::intent::{Intent, IntentOp, Phase};
use crate::txn::op::FsOp;
use crate::txn::recover::{plan_recovery, RecoveryMode};
use lanspread_ports::fs::FileKind;

/// Plans the removal.
#[derive(Debug, Default)]
pub struct RemovePlanner;

/// The remove-downloaded-files machine.
pub type RemoveDownloaded = Flow<RemovePlanner>;

impl RemoveDownloaded {
    /// Removes the downloaded files of `id`; refused at once if `id` is not
    /// in `catalog`.
    pub fn remove(catalog: &Catalog, id: &GameId) -> Self {
        if !catalog.contains(id) {
            return Flow::finished(id.root(), RemovePlanner, Err(TxnError::NotInCatalog { id: id.to_string() }));
        }
        Flow::new(id.root(), RemovePlanner)
    }
}

impl Planner for RemovePlanner {
    type Output = ();

    fn observed(&mut self, f: &RootFacts) -> Result<Decision, TxnError> {
        let root = &f.root;
        f.require_root_dir()?;
        f.require_no_intent()?;
        match f.kind(layout::LOCAL) {
            None => {}
            Some(FileKind::Dir) => return Err(TxnError::Installed { root: root.clone() }),
            Some(FileKind::Symlink) => return Err(TxnError::Symlink { root: root.clone(), what: layout::LOCAL.into() }),
            Some(k) => {
                return Err(TxnError::Unexpected {
                    root: root.clone(),
                    detail: format!("local is a {}; refusing to remove the game root (remove it by hand)", kind_name(&k)),
                })
            }
        }
        f.require_absent(layout::INSTALLING)?;
        f.require_absent(layout::BACKUP)?;
        match f.kind(layout::VERSION_INI) {
            Some(FileKind::File) => {}
            None => {
                return Err(TxnError::NotDownloaded {
                    root: root.clone(),
                    detail: "there is no version.ini; refusing to delete a directory that does not prove to be a game root".into(),
                })
            }
            Some(k) => {
                return Err(TxnError::NotDownloaded {
                    root: root.clone(),
                    detail: format!("version.ini is a {}, not a file; refusing to delete the game root", kind_name(&k)),
                })
            }
        }
        let mut steps = write_intent(root, &Intent::new(IntentOp::Remove, Phase::Removing));
        // The commit point is the rename that publishes the intent: from
        // then on recovery rolls the removal forward, even if the fsync
        // after it fails.
        let published = steps.iter().position(|s| matches!(s, Step::Op(FsOp::Rename { .. }))).map_or(steps.len(), |i| i + 1);
        steps.insert(published, Step::Committed);
        // The rest is exactly what recovery does with a `remove` intent.
        let mut with_intent = f.clone();
        with_intent.entries.insert(layout::INTENT.into(), FileKind::File);
        with_intent.intent = crate::txn::flow::IntentState::Valid(Intent::new(IntentOp::Remove, Phase::Removing));
        with_intent.entries.remove(layout::INTENT_TMP);
        let (rest, _) = plan_recovery(&with_intent, RecoveryMode::Normal)?;
        steps.extend(rest);
        Ok(Decision::Execute(steps))
    }

    fn recover_on_failure(&self) -> bool {
        true
    }

    fn output(&mut self) {}
}
