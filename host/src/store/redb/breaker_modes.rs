//! Breaker modes set by operators, remembered in `<data>/breaker-modes.json`
//! beside the journal, so the CLI can set one without opening the journal
//! (a serving host holds it) and hosts apply it when they load the tool.

use std::collections::BTreeMap;
use std::path::Path;

use crate::resilience::breaker::BreakerMode;

const FILE: &str = "breaker-modes.json";

/// The remembered modes; an unreadable file counts as none (and is logged).
pub(crate) fn read(dir: &Path) -> BTreeMap<String, BreakerMode> {
    match std::fs::read(dir.join(FILE)) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "ignoring unreadable {FILE}");
            BTreeMap::new()
        }),
        Err(_) => BTreeMap::new(),
    }
}

fn write(dir: &Path, modes: &BTreeMap<String, BreakerMode>) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{FILE}.tmp-{}", std::process::id()));
    std::fs::write(&tmp, serde_json::to_vec_pretty(modes)?)?;
    std::fs::rename(&tmp, dir.join(FILE))
}

/// Remembers `mode` for `tool` (`Normal` forgets it).
pub(crate) fn remember(dir: &Path, tool: &str, mode: BreakerMode) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut modes = read(dir);
    if mode == BreakerMode::Normal {
        modes.remove(tool);
    } else {
        modes.insert(tool.to_owned(), mode);
    }
    write(dir, &modes)
}
