//! Hot reload end to end (SPEC §5): fhirguard in-process with its config file in a temporary
//! directory, changed the ways operators and Kubernetes change it — an in-place edit, an editor's
//! rename-over, the ConfigMap `..data` symlink swap, SIGHUP — each observed within a deadline
//! through `/metrics` and through a decision that the change flips. An invalid file keeps the old
//! config serving; 50 reloads under concurrent load decide every request right.
//!
//! SIGHUP goes to the whole test process, so every reloader in this binary sees it. A reload
//! of an unchanged file is a no-op, so only the failure count of an invalid file can move
//! because of another test's signal; assertions on it are lower bounds.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::exposition::metric;
use crate::support::poll::eventually;
use crate::support::stack::{Guard, Stack};
use fhirguard::config::Config;
use http::StatusCode;
use tempfile::TempDir;

/// What every test allows a reload to take, from the change to the new decision.
const RELOAD_DEADLINE: Duration = Duration::from_secs(10);

/// fhirguard watching `path`, with the stack it guards.
struct Watched {
    guard: Guard,
    /// Owns the directory; removed on drop.
    _dir: TempDir,
    dir: PathBuf,
    path: PathBuf,
}

impl std::ops::Deref for Watched {
    type Target = Guard;

    fn deref(&self) -> &Guard {
        &self.guard
    }
}

impl Watched {
    /// Starts fhirguard on the config `config` writes, at `path` in `dir` (through it, when
    /// the test made it a symlink).
    async fn start(dir: TempDir, path: PathBuf, config: impl FnOnce(&Stack) -> String) -> Watched {
        let guard = Stack::builder()
            .config_file(path.clone())
            .serve(config)
            .await;
        Watched {
            guard,
            dir: dir.path().to_path_buf(),
            _dir: dir,
            path,
        }
    }

    /// `config.yaml` in a new directory, granting `actions`.
    async fn plain(actions: &str) -> Watched {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.yaml");
        Watched::start(dir, path, |stack| stack.yaml(actions, "")).await
    }

    async fn generation(&self) -> f64 {
        metric(&self.metrics().await, "fhirguard_config_generation").expect("generation gauge")
    }

    async fn reloads(&self, result: &str) -> f64 {
        let series = format!("fhirguard_config_reloads_total{{result=\"{result}\"}}");
        metric(&self.metrics().await, &series).unwrap_or(0.0)
    }

    /// The status of `DELETE /Patient/1` with a valid token: 403 under `[Read]`, 200 once the
    /// role also grants `Delete`.
    async fn delete_status(&self) -> StatusCode {
        let token = self.stack.token();
        let (status, body) = self
            .http
            .call(
                "DELETE",
                self.running.proxy_address,
                "/Patient/1",
                Some(&token),
            )
            .await
            .expect("DELETE answered");
        assert!(
            status == StatusCode::OK || status == StatusCode::FORBIDDEN,
            "{status}: {body}"
        );
        status
    }

    /// Asserts the starting point, generation 1 where the role cannot delete.
    async fn assert_read_only(&self) {
        assert_eq!(self.generation().await, 1.0);
        assert_eq!(self.delete_status().await, StatusCode::FORBIDDEN);
    }

    /// Waits for generation `number` and the decision flipped to 200 by granting `Delete`.
    async fn assert_reloaded_to(&self, number: f64, how: &str) {
        eventually(
            &format!("{how} is applied as generation {number}"),
            RELOAD_DEADLINE,
            || async move { self.generation().await == number },
        )
        .await;
        assert_eq!(
            self.delete_status().await,
            StatusCode::OK,
            "{how}: the new role mapping decides"
        );
        assert!(self.reloads("success").await >= 1.0);
    }
}

/// Writes `text` to `path` the way editors that save atomically do: a temporary file in the same
/// directory, then a rename over the original.
fn write_by_rename(path: &Path, text: &str) {
    let temporary = path.with_extension("yaml.tmp");
    std::fs::write(&temporary, text).expect("write temporary file");
    std::fs::rename(&temporary, path).expect("rename over the config");
}

#[tokio::test]
async fn an_in_place_edit_is_applied() {
    let w = Watched::plain("[Read]").await;
    w.assert_read_only().await;
    std::fs::write(&w.path, w.stack.yaml("[Read, Delete]", "")).expect("edit in place");
    w.assert_reloaded_to(2.0, "an in-place edit").await;
}

#[tokio::test]
async fn a_rename_over_the_file_is_applied() {
    let w = Watched::plain("[Read]").await;
    w.assert_read_only().await;
    write_by_rename(&w.path, &w.stack.yaml("[Read, Delete]", ""));
    w.assert_reloaded_to(2.0, "a rename-over").await;
}

/// The layout the kubelet gives a mounted ConfigMap: the data in a timestamped directory,
/// `..data` a symlink to it, and each key a symlink through `..data`. An update writes a new
/// timestamped directory, renames a new `..data` link over the old one (the atomic step), then
/// removes the old directory.
#[tokio::test]
async fn a_configmap_symlink_swap_is_applied() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().to_path_buf();
    let first = root.join("..2026_01_01_00_00_00.000000001");
    std::fs::create_dir(&first).unwrap();
    symlink(
        Path::new("..2026_01_01_00_00_00.000000001"),
        &root.join("..data"),
    );
    symlink(Path::new("..data/config.yaml"), &root.join("config.yaml"));
    // Written through the links, into the timestamped directory.
    let w = Watched::start(dir, root.join("config.yaml"), |stack| {
        stack.yaml("[Read]", "")
    })
    .await;
    w.assert_read_only().await;

    let second_name = "..2026_01_01_00_01_00.000000002";
    let second = w.dir.join(second_name);
    std::fs::create_dir(&second).unwrap();
    std::fs::write(
        second.join("config.yaml"),
        w.stack.yaml("[Read, Delete]", ""),
    )
    .unwrap();
    symlink(Path::new(second_name), &w.dir.join("..data_tmp"));
    std::fs::rename(w.dir.join("..data_tmp"), w.dir.join("..data")).expect("swap ..data");
    std::fs::remove_dir_all(&first).unwrap();
    w.assert_reloaded_to(2.0, "a ConfigMap ..data swap").await;
}

fn symlink(target: &Path, link: &Path) {
    std::os::unix::fs::symlink(target, link)
        .unwrap_or_else(|e| panic!("symlink {} -> {}: {e}", link.display(), target.display()));
}

/// The config path is a symlink into a directory fhirguard does not watch, so editing the target
/// raises no event where fhirguard looks: only SIGHUP can bring the change in.
#[tokio::test]
async fn sighup_reloads() {
    let watched_dir = tempfile::tempdir().expect("tempdir");
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let target = elsewhere.path().join("real.yaml");
    let path = watched_dir.path().join("config.yaml");
    symlink(&target, &path);
    // Written through the link, to the target.
    let w = Watched::start(watched_dir, path, |stack| stack.yaml("[Read]", "")).await;
    w.assert_read_only().await;

    std::fs::write(&target, w.stack.yaml("[Read, Delete]", "")).unwrap();
    // Three debounce periods without a signal: the edit alone must not be seen. The behaviour
    // under test is an absence, so this waits a fixed window: no signal can say "nothing came".
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(w.generation().await, 1.0, "reloaded without SIGHUP");

    // `app::start` returned, so the reloader's SIGHUP handler is installed and the default
    // action (terminate) cannot hit this process.
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -HUP failed: {status}");
    w.assert_reloaded_to(2.0, "SIGHUP").await;
}

#[tokio::test]
async fn an_invalid_file_keeps_the_old_config_and_counts_a_failure() {
    let w = Watched::plain("[Read]").await;
    w.assert_read_only().await;
    let failures_before = w.reloads("failure").await;

    // Three mistakes: an unknown key, a bad duration and a data action that does not exist.
    let invalid = w.stack.yaml(
        "[Read, Delete, Obliterate]",
        "clockSkew: soon\nlistenn: x\n",
    );
    Config::parse(&invalid).expect_err("the edit is invalid");
    write_by_rename(&w.path, &invalid);
    let watched = &w;
    eventually(
        "the invalid file is counted as a failed reload",
        RELOAD_DEADLINE,
        || async move { watched.reloads("failure").await > failures_before },
    )
    .await;
    assert_eq!(w.generation().await, 1.0, "the old generation serves");
    assert_eq!(w.delete_status().await, StatusCode::FORBIDDEN);
    assert_eq!(w.reloads("success").await, 0.0);

    // Mending the file is a normal reload.
    write_by_rename(&w.path, &w.stack.yaml("[Read, Delete]", ""));
    w.assert_reloaded_to(2.0, "the mended file").await;
}

/// Eight clients send a valid and an expired token in a loop while the file is replaced 50
/// times. The replacements change only a comment, so every valid request must be 200 and every
/// expired one 401, whichever generation decides it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_reloads_under_load_decide_every_request_right() {
    const RELOADS: u32 = 50;
    const CLIENTS: usize = 8;
    let w = Arc::new(Watched::plain("[Read]").await);
    let valid = w.stack.token();
    let expired = w.stack.expired_token();
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let wrong = Arc::new(Mutex::new(Vec::<String>::new()));

    let mut clients = Vec::new();
    for client in 0..CLIENTS {
        let (w, stop, sent, wrong) = (
            Arc::clone(&w),
            Arc::clone(&stop),
            Arc::clone(&sent),
            Arc::clone(&wrong),
        );
        let (valid, expired) = (valid.clone(), expired.clone());
        clients.push(tokio::spawn(async move {
            let proxy = w.running.proxy_address;
            let mut round = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let (token, expected) = if (round + client as u64) % 2 == 0 {
                    (&valid, StatusCode::OK)
                } else {
                    (&expired, StatusCode::UNAUTHORIZED)
                };
                round += 1;
                sent.fetch_add(1, Ordering::Relaxed);
                match w.http.get(proxy, "/Patient/1", Some(token)).await {
                    Ok((status, _)) if status == expected => {}
                    Ok((status, body)) => wrong
                        .lock()
                        .unwrap()
                        .push(format!("expected {expected}, got {status}: {body}")),
                    Err(error) => wrong.lock().unwrap().push(error),
                }
            }
        }));
    }

    let watched: &Watched = &w;
    for reload in 1..=RELOADS {
        let comment = format!("# revision {reload}\n");
        write_by_rename(&w.path, &w.stack.yaml("[Read]", &comment));
        let generation = f64::from(reload + 1);
        eventually(
            &format!("reload {reload} is applied"),
            RELOAD_DEADLINE,
            || async move { watched.generation().await >= generation },
        )
        .await;
    }
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        tokio::time::timeout(Duration::from_secs(30), client)
            .await
            .expect("clients stop")
            .expect("client task");
    }

    let wrong = std::mem::take(&mut *wrong.lock().unwrap());
    let sent = sent.load(Ordering::Relaxed);
    assert!(
        wrong.is_empty(),
        "{} of {sent} requests failed or were decided wrongly, e.g. {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
    assert!(
        sent >= u64::from(RELOADS),
        "only {sent} requests during the reloads"
    );
    assert_eq!(w.generation().await, f64::from(RELOADS + 1));
    assert_eq!(w.reloads("success").await, f64::from(RELOADS));
    assert_eq!(w.reloads("failure").await, 0.0);
}
