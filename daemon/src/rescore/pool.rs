//! Rescoring off the hot path: a hot-reloadable [`ModelHandle`] and a [`RescorePool`] of worker
//! threads behind a bounded queue.
//!
//! Ingestion must never wait for the rescorer (docs/architecture.md#performance-targets): [`RescorePool::try_submit`]
//! returns the job when the queue is full and the caller counts it as shed (its sampling weight is then not
//! realised, which the caller must account for, e.g. by not recording the decision as sampled).
//! Workers take up to `batch_size` queued jobs at a time, score them with the model current at
//! that moment, and send one [`Outcome`] per job to a tokio unbounded channel (never blocks).

use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc::UnboundedSender;

use super::model::valid_score;
use super::{RescoreError, Rescorer};
use crate::telemetry::RescoreMetrics;

/// A query to rescore and whatever the caller needs back with its score.
#[derive(Debug)]
pub struct Job<T> {
    pub text: String,
    pub payload: T,
}

/// A scored job.
#[derive(Debug)]
pub struct Scored<T> {
    pub payload: T,
    /// Model output for the job's text.
    pub p_complex: f32,
    /// `model_version` of the model that produced `p_complex`.
    pub model_version: Arc<str>,
    /// That model's decision threshold θ.
    pub threshold: f32,
}

/// A job that could not be scored: its batch failed (inference error, shared by every job of the
/// batch) or the model's output for it was not in [0, 1] (this job only). Not retried.
#[derive(Debug)]
pub struct Failed<T> {
    pub payload: T,
    pub model_version: Arc<str>,
    /// Shared by every job of a failed batch.
    pub error: Arc<RescoreError>,
}

/// What a worker sends back for each job.
pub type Outcome<T> = Result<Scored<T>, Failed<T>>;

/// Pool sizing. Values of 0 are raised to 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolConfig {
    /// Worker threads (each scores whole batches on one core).
    pub workers: usize,
    /// Jobs that may wait; beyond that `try_submit` sheds.
    pub queue_capacity: usize,
    /// Most jobs a worker scores in one model run.
    pub batch_size: usize,
}

impl Default for PoolConfig {
    fn default() -> Self {
        // One core scores ~120k+ queries/s at batch 64 (BENCHMARKS.md); 4096 queued jobs is well
        // under 0.1 s of backlog, enough to absorb bursts without holding much memory.
        PoolConfig { workers: 1, queue_capacity: 4096, batch_size: 64 }
    }
}

/// Size and mtime of the ONNX file and its sidecar: a change of either triggers a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fingerprint([(Option<SystemTime>, u64); 2]);

fn fingerprint(onnx: &Path) -> Option<Fingerprint> {
    let stat = |p: &Path| std::fs::metadata(p).ok().map(|m| (m.modified().ok(), m.len()));
    Some(Fingerprint([stat(onnx)?, stat(&onnx.with_extension("json"))?]))
}

/// The current model, swapped atomically on reload. Readers clone the `Arc` (a read lock held
/// for nanoseconds); a batch in flight finishes on the model it started with.
pub struct ModelHandle {
    path: PathBuf,
    current: RwLock<Arc<Rescorer>>,
    /// Files as of the last load attempt (successful or not), so a broken file is tried once per
    /// change, not once per poll.
    seen: Mutex<Option<Fingerprint>>,
    metrics: RescoreMetrics,
}

impl std::fmt::Debug for ModelHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelHandle").field("path", &self.path).field("version", &self.current().version()).finish()
    }
}

impl ModelHandle {
    /// Loads the model at `onnx_path` (see [`Rescorer::load`]).
    pub fn load(onnx_path: impl Into<PathBuf>, metrics: RescoreMetrics) -> Result<Arc<Self>, RescoreError> {
        let path = onnx_path.into();
        // Fingerprint before loading: a file replaced during the load is seen as a change later.
        let seen = fingerprint(&path);
        let model = Rescorer::load(&path)?;
        Ok(Arc::new(ModelHandle { path, current: RwLock::new(Arc::new(model)), seen: Mutex::new(seen), metrics }))
    }

    /// The model to score with now.
    pub fn current(&self) -> Arc<Rescorer> {
        match self.current.read() {
            Ok(g) => Arc::clone(&g),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// The ONNX file watched.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Loads the file again and swaps it in. On error the previous model keeps serving; the
    /// error is returned, logged and counted (`tierwatch_rescore_model_reloads_total{result}`).
    pub fn reload(&self) -> Result<Arc<Rescorer>, RescoreError> {
        let previous = self.current();
        match Rescorer::load(&self.path) {
            Ok(model) => {
                let model = Arc::new(model);
                match self.current.write() {
                    Ok(mut g) => *g = Arc::clone(&model),
                    Err(poisoned) => *poisoned.into_inner() = Arc::clone(&model),
                }
                self.metrics.reloads_ok.inc();
                tracing::info!(path = %self.path.display(), from = %previous.version(), to = %model.version(), "rescorer model reloaded");
                Ok(model)
            }
            Err(e) => {
                self.metrics.reloads_error.inc();
                tracing::warn!(path = %self.path.display(), error = %e, kept = %previous.version(), "rescorer model reload failed; keeping the previous model");
                Err(e)
            }
        }
    }

    /// Reloads if the ONNX file or the sidecar changed (size or mtime) since the last attempt.
    /// `Ok(true)` when a new model was swapped in.
    pub fn reload_if_changed(&self) -> Result<bool, RescoreError> {
        let now = fingerprint(&self.path);
        {
            let mut seen = match self.seen.lock() {
                Ok(g) => g,
                Err(poisoned) => poisoned.into_inner(),
            };
            if *seen == now {
                return Ok(false);
            }
            *seen = now;
        }
        self.reload().map(|_| true)
    }

    /// Starts a thread that calls [`Self::reload_if_changed`] every `interval`. Replace model
    /// files by rename (write elsewhere, then `mv`) so a reload never sees a half-written file;
    /// if it does, the load fails, the old model stays, and the next change is picked up.
    pub fn spawn_watcher(self: &Arc<Self>, interval: Duration) -> std::io::Result<ModelWatcher> {
        let (stop, stopped) = mpsc::channel::<()>();
        let handle = Arc::clone(self);
        let thread = std::thread::Builder::new().name("rescore-watch".into()).spawn(move || {
            // Any message or the sender's drop ends the loop.
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(interval) {
                // Errors are logged and counted by reload(); the old model keeps serving.
                let _ = handle.reload_if_changed();
            }
        })?;
        Ok(ModelWatcher { stop: Some(stop), thread: Some(thread) })
    }
}

/// The watcher thread of [`ModelHandle::spawn_watcher`]; stopped and joined on drop.
#[derive(Debug)]
pub struct ModelWatcher {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl ModelWatcher {
    /// Stops the thread and waits for it (at most one reload in progress).
    pub fn stop(self) {}
}

impl Drop for ModelWatcher {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Worker threads scoring [`Job`]s from a bounded queue. Dropping the pool (or
/// [`RescorePool::shutdown`]) closes the queue, lets the workers score what is queued, and joins
/// them.
pub struct RescorePool<T: Send + 'static> {
    tx: Option<crossbeam_channel::Sender<Job<T>>>,
    workers: Vec<JoinHandle<()>>,
    metrics: RescoreMetrics,
}

impl<T: Send + 'static> RescorePool<T> {
    /// Starts `config.workers` threads scoring with `model.current()` and sending outcomes to
    /// `out` (if its receiver is gone, outcomes are dropped).
    pub fn new(
        config: PoolConfig,
        model: Arc<ModelHandle>,
        out: UnboundedSender<Outcome<T>>,
        metrics: RescoreMetrics,
    ) -> std::io::Result<Self> {
        let (tx, rx) = crossbeam_channel::bounded::<Job<T>>(config.queue_capacity.max(1));
        let batch_size = config.batch_size.max(1);
        let mut pool = RescorePool { tx: Some(tx), workers: Vec::new(), metrics: metrics.clone() };
        for i in 0..config.workers.max(1) {
            let (rx, model, out, metrics) = (rx.clone(), Arc::clone(&model), out.clone(), metrics.clone());
            // On a spawn error the pool built so far is dropped: its workers are joined.
            let worker = std::thread::Builder::new()
                .name(format!("rescore-{i}"))
                .spawn(move || work(rx, model, out, batch_size, metrics))?;
            pool.workers.push(worker);
        }
        Ok(pool)
    }

    /// Queues a job without blocking. Returns it when the queue is full (counted in
    /// `tierwatch_rescore_shed_total`); the caller decides what shedding means for its sample.
    pub fn try_submit(&self, job: Job<T>) -> Result<(), Job<T>> {
        let Some(tx) = &self.tx else { return Err(job) };
        match tx.try_send(job) {
            Ok(()) => {
                self.metrics.queue_depth.set(tx.len() as i64);
                Ok(())
            }
            Err(crossbeam_channel::TrySendError::Full(job) | crossbeam_channel::TrySendError::Disconnected(job)) => {
                self.metrics.shed.inc();
                Err(job)
            }
        }
    }

    /// Jobs waiting for a worker.
    pub fn queue_len(&self) -> usize {
        self.tx.as_ref().map_or(0, |tx| tx.len())
    }

    /// Closes the queue, waits until the workers have scored every queued job, joins them.
    pub fn shutdown(self) {}
}

impl<T: Send + 'static> Drop for RescorePool<T> {
    fn drop(&mut self) {
        drop(self.tx.take());
        for w in self.workers.drain(..) {
            if w.join().is_err() {
                tracing::error!("a rescore worker panicked");
            }
        }
        self.metrics.queue_depth.set(0);
    }
}

fn work<T>(
    rx: crossbeam_channel::Receiver<Job<T>>,
    model: Arc<ModelHandle>,
    out: UnboundedSender<Outcome<T>>,
    batch_size: usize,
    metrics: RescoreMetrics,
) {
    let mut batch: Vec<Job<T>> = Vec::with_capacity(batch_size);
    // recv() keeps returning queued jobs after the pool dropped its sender, so shutdown drains.
    while let Ok(first) = rx.recv() {
        batch.push(first);
        while batch.len() < batch_size {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        metrics.queue_depth.set(rx.len() as i64);
        let rescorer = model.current();
        let started = Instant::now();
        let result = {
            let texts: Vec<&str> = batch.iter().map(|j| j.text.as_str()).collect();
            rescorer.score_batch(&texts)
        };
        metrics.batch_seconds.observe(started.elapsed().as_secs_f64());
        let version = rescorer.version();
        match result {
            Ok(scores) => {
                let mut bad = 0u64;
                for (job, p_complex) in batch.drain(..).zip(scores) {
                    // One output that is not a probability fails its own job only.
                    let outcome = if valid_score(p_complex) {
                        metrics.scored.inc();
                        Ok(Scored {
                            payload: job.payload,
                            p_complex,
                            model_version: Arc::clone(version),
                            threshold: rescorer.threshold(),
                        })
                    } else {
                        bad += 1;
                        let error = RescoreError::OutOfRange(format!("p_complex {p_complex} is not in [0, 1]"));
                        Err(Failed { payload: job.payload, model_version: Arc::clone(version), error: Arc::new(error) })
                    };
                    // A closed receiver means nobody wants results any more: keep draining.
                    let _ = out.send(outcome);
                }
                if bad > 0 {
                    tracing::warn!(model = %version, jobs = bad, "rescorer output not in [0, 1]; those samples are shed");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, jobs = batch.len(), "rescore batch failed");
                let error = Arc::new(e);
                for job in batch.drain(..) {
                    let failed =
                        Failed { payload: job.payload, model_version: Arc::clone(version), error: Arc::clone(&error) };
                    let _ = out.send(Err(failed));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rescore::model::tests::{copy_model, replace_file, write_affine_model};

    fn version(v: &'static str) -> impl FnOnce(&mut serde_json::Value) {
        move |s| s["model_version"] = v.into()
    }

    /// A pool scoring with a fresh copy of the model (version "v1"), its handle, metrics and the
    /// receiver of its outcomes.
    fn v1_pool(
        dir: &std::path::Path,
        config: PoolConfig,
    ) -> (RescorePool<usize>, Arc<ModelHandle>, RescoreMetrics, tokio::sync::mpsc::UnboundedReceiver<Outcome<usize>>)
    {
        let metrics = RescoreMetrics::new();
        let handle = ModelHandle::load(copy_model(dir, "m", version("v1")), metrics.clone()).unwrap();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let pool = RescorePool::new(config, Arc::clone(&handle), tx, metrics.clone()).unwrap();
        (pool, handle, metrics, rx)
    }

    fn drain<T>(rx: &mut tokio::sync::mpsc::UnboundedReceiver<Outcome<T>>) -> Vec<Outcome<T>> {
        let mut v = Vec::new();
        while let Ok(o) = rx.try_recv() {
            v.push(o);
        }
        v
    }

    #[test]
    fn scores_every_job_and_drains_on_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let (pool, handle, metrics, mut rx) =
            v1_pool(dir.path(), PoolConfig { workers: 2, queue_capacity: 1000, batch_size: 8 });
        let texts = ["where is my order", "dispute a chargeback on invoice INV-1", ""];
        for i in 0..100usize {
            pool.try_submit(Job { text: texts[i % 3].to_string(), payload: i }).unwrap();
        }
        pool.shutdown();
        let mut got: Vec<(usize, f32)> = drain(&mut rx)
            .into_iter()
            .map(|o| {
                let s = o.unwrap();
                assert_eq!(&*s.model_version, "v1");
                assert_eq!(s.threshold, handle.current().threshold());
                (s.payload, s.p_complex)
            })
            .collect();
        got.sort_by_key(|g| g.0);
        assert_eq!(got.len(), 100);
        let expect = handle.current().score_batch(&texts).unwrap();
        for (i, p) in got {
            assert_eq!(p, expect[i % 3], "job {i}");
        }
        assert_eq!(metrics.scored.get(), 100);
        assert_eq!(metrics.shed.get(), 0);
        assert!(metrics.batch_seconds.get_sample_count() > 0);
    }

    #[test]
    fn sheds_when_the_queue_is_full() {
        let dir = tempfile::tempdir().unwrap();
        let (pool, handle, metrics, mut rx) =
            v1_pool(dir.path(), PoolConfig { workers: 1, queue_capacity: 2, batch_size: 1 });
        // Block the only worker: it takes a job, then waits for the model behind this write lock.
        let guard = handle.current.write().unwrap();
        pool.try_submit(Job { text: "a".into(), payload: 0 }).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while pool.queue_len() > 0 {
            assert!(Instant::now() < deadline, "worker never took the job");
            std::thread::sleep(Duration::from_millis(1));
        }
        pool.try_submit(Job { text: "b".into(), payload: 1 }).unwrap();
        pool.try_submit(Job { text: "c".into(), payload: 2 }).unwrap();
        let started = Instant::now();
        let shed = pool.try_submit(Job { text: "d".into(), payload: 3 }).unwrap_err();
        assert!(started.elapsed() < Duration::from_millis(100), "try_submit must not block");
        assert_eq!(shed.payload, 3);
        assert_eq!(metrics.shed.get(), 1);
        assert_eq!(metrics.queue_depth.get(), 2);
        drop(guard);
        pool.shutdown();
        let mut ids: Vec<usize> = drain(&mut rx).into_iter().map(|o| o.unwrap().payload).collect();
        ids.sort();
        assert_eq!(ids, [0, 1, 2]);
        assert_eq!(metrics.queue_depth.get(), 0);
    }

    #[test]
    fn reload_swaps_version_and_broken_file_keeps_old_model() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = RescoreMetrics::new();
        let path = copy_model(dir.path(), "m", version("v1"));
        let handle = ModelHandle::load(&path, metrics.clone()).unwrap();
        assert_eq!(&**handle.current().version(), "v1");

        copy_model(dir.path(), "m", version("v2"));
        assert_eq!(&**handle.reload().unwrap().version(), "v2");
        assert_eq!(&**handle.current().version(), "v2");
        assert_eq!(metrics.reloads_ok.get(), 1);

        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 3]).unwrap();
        let err = handle.reload().unwrap_err();
        assert!(matches!(err, RescoreError::Model { .. }), "{err}");
        assert_eq!(metrics.reloads_error.get(), 1);
        let still = handle.current();
        assert_eq!(&**still.version(), "v2");
        assert_eq!(still.score_batch(&["where is my order"]).unwrap().len(), 1);
    }

    #[test]
    fn reload_of_a_model_with_outputs_outside_0_1_keeps_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = RescoreMetrics::new();
        let path = copy_model(dir.path(), "m", version("v1"));
        let handle = ModelHandle::load(&path, metrics.clone()).unwrap();
        // The file is replaced by a model that answers 3.0 for everything.
        let bad = write_affine_model(dir.path(), "bad", 0.0, 3.0, false);
        replace_file(&path, &std::fs::read(&bad).unwrap());
        replace_file(&path.with_extension("json"), &std::fs::read(bad.with_extension("json")).unwrap());
        let err = handle.reload().unwrap_err();
        assert!(matches!(err, RescoreError::OutOfRange(_)), "{err}");
        assert_eq!(metrics.reloads_error.get(), 1);
        assert_eq!(&**handle.current().version(), "v1");
    }

    #[test]
    fn an_output_outside_0_1_fails_only_its_own_job() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = RescoreMetrics::new();
        // 2.0 for a text with features, 0.0 for the empty text. Such a model is refused at load
        // (the probe texts have features), so it is put into a handle as if it had slipped
        // through: a model can also misbehave only on inputs no probe tried.
        let handle = ModelHandle::load(copy_model(dir.path(), "m", version("v1")), metrics.clone()).unwrap();
        let unprobed = Rescorer::load_unprobed(write_affine_model(dir.path(), "two", 2.0, 0.0, false)).unwrap();
        *handle.current.write().unwrap() = Arc::new(unprobed);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let pool =
            RescorePool::new(PoolConfig { workers: 1, queue_capacity: 16, batch_size: 8 }, handle, tx, metrics.clone())
                .unwrap();
        let texts = ["", "where is my order", "", "refund please", ""];
        for (i, t) in texts.iter().enumerate() {
            pool.try_submit(Job { text: t.to_string(), payload: i }).unwrap();
        }
        pool.shutdown();
        let mut scored = vec![];
        let mut failed = vec![];
        for o in drain(&mut rx) {
            match o {
                Ok(s) => scored.push((s.payload, s.p_complex)),
                Err(f) => {
                    assert!(matches!(*f.error, RescoreError::OutOfRange(_)), "{}", f.error);
                    failed.push(f.payload);
                }
            }
        }
        scored.sort_by_key(|s| s.0);
        failed.sort();
        assert_eq!(scored, [(0, 0.0), (2, 0.0), (4, 0.0)]);
        assert_eq!(failed, [1, 3]);
        assert_eq!(metrics.scored.get(), 3);
    }

    #[test]
    fn watcher_reloads_on_change_and_skips_unchanged_broken_files() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = RescoreMetrics::new();
        let path = copy_model(dir.path(), "m", version("v1"));
        let handle = ModelHandle::load(&path, metrics.clone()).unwrap();
        let watcher = handle.spawn_watcher(Duration::from_millis(10)).unwrap();
        let wait_for = |what: &str, ok: &dyn Fn() -> bool| {
            let deadline = Instant::now() + Duration::from_secs(20);
            while !ok() {
                assert!(Instant::now() < deadline, "timed out waiting for {what}");
                std::thread::sleep(Duration::from_millis(5));
            }
        };
        copy_model(dir.path(), "m", version("version-two"));
        wait_for("reload to version-two", &|| &**handle.current().version() == "version-two");

        // A broken sidecar: one failed attempt, then no retry until the files change again.
        replace_file(&path.with_extension("json"), b"{ truncated");
        wait_for("failed reload", &|| metrics.reloads_error.get() == 1);
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(metrics.reloads_error.get(), 1, "an unchanged broken file is not retried every poll");
        assert_eq!(&**handle.current().version(), "version-two");
        watcher.stop();
    }
}
