//! Watches the config directory: inotify events (through `notify`) wake it, a burst of writes
//! settles into one reload (debounce), and a slow rescan is the safety net for missed events or
//! file systems without notifications. Only files that changed are parsed again.
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use notify::{Event, EventKind, RecursiveMode, Watcher};

use super::Control;
use crate::istio::DirLoader;

/// A change is loaded once the directory has been quiet this long. Short: one `kubectl apply`
/// or `cp` of many files is a burst well under it, and an endpoint change should reach proxies
/// in tens of milliseconds, not hundreds.
pub const DEBOUNCE: Duration = Duration::from_millis(20);
/// A burst that never settles is still loaded this often.
const MAX_DELAY: Duration = Duration::from_secs(1);
/// Rescan without an event: the safety net with notifications, the mechanism without them.
const RESCAN: Duration = Duration::from_secs(2);
const POLL: Duration = Duration::from_millis(50);

fn is_config(p: &Path) -> bool {
    p.extension().is_some_and(|x| x == "yaml" || x == "yml")
}

/// Events that can mean a config file changed (not our own reads of it).
fn relevant(ev: &Event) -> bool {
    let kind = match ev.kind {
        EventKind::Access(notify::event::AccessKind::Close(notify::event::AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    };
    kind && (ev.paths.is_empty() || ev.paths.iter().any(|p| is_config(p)))
}

pub async fn run(dir: PathBuf, control: Arc<Control>, mut loader: DirLoader) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let watcher = notify::recommended_watcher(move |ev: notify::Result<Event>| {
        if ev.as_ref().map_or(true, relevant) {
            let _ = tx.send(());
        }
    })
    .and_then(|mut w| w.watch(&dir, RecursiveMode::NonRecursive).map(|()| w));
    let (_watcher, rescan) = match watcher {
        Ok(w) => (Some(w), RESCAN),
        Err(e) => {
            tracing::warn!(error = %e, dir = %dir.display(), "no file notifications; polling the directory");
            (None, POLL)
        }
    };
    loop {
        let woken = tokio::select! {
            ev = rx.recv() => ev.is_some(),
            _ = tokio::time::sleep(rescan) => false,
        };
        if woken {
            let first = Instant::now();
            while first.elapsed() < MAX_DELAY {
                match tokio::time::timeout(DEBOUNCE, rx.recv()).await {
                    Ok(Some(())) => continue,
                    _ => break,
                }
            }
        }
        if loader.is_current(&dir) {
            continue;
        }
        let started = Instant::now();
        match loader.load(&dir) {
            Ok(reg) => {
                let loaded = started.elapsed();
                control.update(reg);
                tracing::info!(
                    dir = %dir.display(),
                    load_ms = loaded.as_millis() as u64,
                    total_ms = started.elapsed().as_millis() as u64,
                    "configuration reloaded"
                );
            }
            Err(errors) => control.reject(errors),
        }
    }
}
