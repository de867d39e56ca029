//! Engines the node starts and keeps running itself (a model's `launch`
//! command): started with the node, restarted with backoff whenever they
//! exit, stopped with the node, and killed by the kernel if the node dies
//! without stopping them (`kill -9`): an engine never outlives its node.
//! Nor do the processes an engine starts itself (vLLM's engine core and
//! workers, which its server's own death leaves running): each engine runs
//! as the leader of its own process group, under a shell that kills the
//! group when the node dies, and the node kills what is left of the group
//! when the engine exits or is stopped.
//! The model is unready from the moment its engine exits until the engine
//! answers its health check again. Each engine writes to its own log,
//! `<data dir>/engines/<model>.log`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;

use crate::clock::Clock;
use crate::llm::model::LlmModel;
use crate::restart::{RestartPolicy, RestartState};

/// How engine restarts are spaced: an engine takes a while to load its
/// model, so the first retry is not immediate, and one that ran a minute
/// counts as healthy again.
const ENGINE_RESTARTS: RestartPolicy = RestartPolicy {
    initial_delay: Duration::from_millis(500),
    max_delay: Duration::from_secs(30),
    stable_after: Duration::from_secs(60),
    jitter: 0.2,
};

/// The shell an engine runs under (`sh -c GUARD gpumesh-engine argv...`),
/// as the leader of the engine's process group: it exits with the engine's
/// status, and when the kernel tells it that the node died (SIGTERM, see
/// `die_with_parent`) it kills the whole group, itself included.
const GUARD: &str = r#"trap 'kill -KILL 0' TERM; "$@" & wait $!"#;

/// Starts `argv` for `model` and keeps it running until the returned
/// handle is dropped (which kills it).
pub(crate) fn supervise(
    model: Arc<LlmModel>,
    argv: Vec<String>,
    data_dir: &Path,
    clock: Arc<dyn Clock>,
    rng: StdRng,
) -> tokio_util::task::AbortOnDropHandle<()> {
    let log = data_dir.join("engines").join(format!("{}.log", model.spec.name));
    tokio_util::task::AbortOnDropHandle::new(tokio::spawn(keep_running(model, argv, log, clock, rng)))
}

async fn keep_running(model: Arc<LlmModel>, argv: Vec<String>, log: PathBuf, clock: Arc<dyn Clock>, mut rng: StdRng) {
    let mut restarts = RestartState::default();
    loop {
        restarts.started(clock.now());
        match start(&argv, &log) {
            Ok(mut child) => {
                let group = Group(child.id());
                tracing::info!(model = %model.spec.name, pid = child.id(), log = %log.display(), "engine started");
                let status = child.wait().await;
                drop(group);
                model.mark_down();
                match status {
                    // The shell's own answers: no such program, or not one
                    // it may run.
                    Ok(status) if matches!(status.code(), Some(126 | 127)) => {
                        tracing::error!(model = %model.spec.name, program = %argv[0], %status, log = %log.display(), "cannot start the engine (not found or not executable): check launch in the model registry");
                    }
                    Ok(status) => {
                        tracing::warn!(model = %model.spec.name, %status, "engine exited; restarting it after backoff");
                    }
                    Err(error) => {
                        tracing::warn!(model = %model.spec.name, %error, "engine exited; restarting it after backoff");
                    }
                }
            }
            Err(error) => {
                tracing::error!(model = %model.spec.name, program = %argv[0], %error, "cannot start the engine: check launch in the model registry");
            }
        }
        let delay = restarts.failed(&ENGINE_RESTARTS, clock.now(), &mut rng);
        tokio::time::sleep(delay).await;
    }
}

fn start(argv: &[String], log: &Path) -> std::io::Result<tokio::process::Child> {
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
    let (program, args) = argv.split_first().ok_or_else(|| std::io::Error::other("launch names no program"))?;
    let mut command = tokio::process::Command::new("sh");
    command.args(["-c", GUARD, "gpumesh-engine", program]).args(args);
    command.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log).process_group(0).kill_on_drop(true);
    die_with_parent(&mut command);
    command.spawn()
}

/// An engine's process group, killed when this is dropped: what the engine
/// left running when it exited, or all of it when the node stops it.
struct Group(Option<u32>);

impl Drop for Group {
    fn drop(&mut self) {
        let Some(leader) = self.0.and_then(|pid| i32::try_from(pid).ok()) else { return };
        // ESRCH: nothing is left of the group.
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(leader), nix::sys::signal::Signal::SIGKILL);
    }
}

/// Asks the kernel to send the engine's guard shell SIGTERM, on which it
/// kills the engine's group, when the thread that starts it (a runtime
/// worker, which lives as long as the node) ends.
#[allow(unsafe_code, reason = "prctl(PR_SET_PDEATHSIG) must run in the child between fork and exec")]
fn die_with_parent(command: &mut tokio::process::Command) {
    // SAFETY: the closure only makes the prctl system call, which is
    // async-signal-safe, and allocates nothing.
    unsafe {
        command.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM).map_err(std::io::Error::from)
        });
    }
}
