//! Watches the config directory by polling (names, sizes, modification times): portable, and a
//! burst of writes settles into one reload (debounce) before anything is pushed.
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::Control;
use crate::istio::load_dir;

const POLL: Duration = Duration::from_millis(50);
/// A change is loaded once the directory has been quiet this long.
pub const DEBOUNCE: Duration = Duration::from_millis(100);

fn fingerprint(dir: &Path) -> Vec<(PathBuf, u64, SystemTime)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "yaml" || x == "yml"))
                .filter_map(|e| {
                    let m = e.metadata().ok()?;
                    Some((e.path(), m.len(), m.modified().ok()?))
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

pub async fn run(dir: PathBuf, control: Arc<Control>) {
    let mut seen = fingerprint(&dir);
    loop {
        tokio::time::sleep(POLL).await;
        let now = fingerprint(&dir);
        if now == seen {
            continue;
        }
        // Wait for the writes to settle.
        let mut settled = now;
        loop {
            tokio::time::sleep(DEBOUNCE).await;
            let again = fingerprint(&dir);
            if again == settled {
                break;
            }
            settled = again;
        }
        seen = settled;
        match load_dir(&dir) {
            Ok(reg) => {
                tracing::info!(dir = %dir.display(), "configuration reloaded");
                control.update(reg);
            }
            Err(errors) => control.reject(errors),
        }
    }
}
