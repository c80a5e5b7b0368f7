//! The hollow engine (issue 26): containers kept in memory, with an
//! engine's latencies and an injected failure rate, so that
//! `berth fleet-sim` runs whole agents (MQTT, queue, planner, executor,
//! feedback, current state) by the thousand on one machine, as Kubernetes
//! proves its control plane with hollow nodes.
//!
//! It is the in-memory engine of the tests ([`FakeRuntime`], keeping no
//! call record so its memory stays flat) behind latencies, and any image
//! can be pulled: the registry is whatever the rollout asks for. Only
//! `berth fleet-sim` constructs it; `berth run` never falls back to it.

use std::sync::Mutex;
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::fake::FakeRuntime;
use super::{
    ContainerDetails, CreateRequest, EngineInfo, EventStream, ExecOutput, ImageDetails,
    PullProgress, Result, Runtime, RuntimeError,
};
use crate::spec::model::ContainerConfig;

/// How long each engine operation takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Latencies {
    /// A pull.
    pub pull: Duration,
    /// A create.
    pub create: Duration,
    /// A start.
    pub start: Duration,
    /// A stop.
    pub stop: Duration,
}

impl Default for Latencies {
    /// The figures: pull 100 ms, create 50 ms, start 50 ms, and a
    /// stop like a start.
    fn default() -> Self {
        Self {
            pull: Duration::from_millis(100),
            create: Duration::from_millis(50),
            start: Duration::from_millis(50),
            stop: Duration::from_millis(50),
        }
    }
}

/// How a hollow engine behaves.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// The latencies.
    pub latencies: Latencies,
    /// The probability (0 to 1) that a pull fails: a device whose activity
    /// pulls one image fails it with this probability, with nothing
    /// touched (DOWNLOAD_FAILURE, then INCOMPLETE).
    pub failure_rate: f64,
    /// Seed of the failure draws, so a run can be repeated.
    pub seed: u64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            latencies: Latencies::default(),
            failure_rate: 0.0,
            seed: 0,
        }
    }
}

/// The hollow engine.
pub struct Hollow {
    engine: FakeRuntime,
    options: Options,
    draws: Mutex<fastrand::Rng>,
}

impl Hollow {
    /// An empty hollow engine.
    pub fn new(options: Options) -> Self {
        Self {
            engine: FakeRuntime::unrecorded(),
            draws: Mutex::new(fastrand::Rng::with_seed(options.seed)),
            options,
        }
    }

    /// Whether this pull fails.
    fn draw_failure(&self) -> bool {
        if self.options.failure_rate <= 0.0 {
            return false;
        }
        let mut rng = self.draws.lock().unwrap_or_else(|e| e.into_inner());
        rng.f64() < self.options.failure_rate
    }

    /// Puts `reference` in the registry when it is not there: a hollow
    /// registry has every image, each with a digest of its own name.
    fn publish(&self, reference: &str) {
        let hex: String = Sha256::digest(reference.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let digest = format!("sha256:{hex}");
        // As the engine names it: the repository without tag or digest.
        let repository = crate::spec::ImageRef::parse_lenient(reference).name();
        self.engine.add_registry_image(
            reference,
            ImageDetails {
                id: digest.clone(),
                repo_tags: vec![reference.to_string()],
                repo_digests: vec![format!("{repository}@{digest}")],
                ..ImageDetails::default()
            },
        );
    }
}

impl Runtime for Hollow {
    async fn info(&self) -> Result<EngineInfo> {
        let mut info = self.engine.info().await?;
        info.version = "hollow".into();
        Ok(info)
    }

    async fn ping(&self) -> Result<()> {
        self.engine.ping().await
    }

    async fn list(&self) -> Result<Vec<ContainerDetails>> {
        self.engine.list().await
    }

    async fn inspect(&self, id: &str) -> Result<Option<ContainerDetails>> {
        self.engine.inspect(id).await
    }

    async fn image(&self, reference: &str) -> Result<Option<ImageDetails>> {
        self.engine.image(reference).await
    }

    async fn registry_digest(&self, reference: &str) -> Result<String> {
        self.publish(reference);
        self.engine.registry_digest(reference).await
    }

    async fn networks(&self) -> Result<Vec<String>> {
        self.engine.networks().await
    }

    async fn pull(
        &self,
        reference: &str,
        progress: &(dyn Fn(PullProgress) + Send + Sync),
    ) -> Result<()> {
        tokio::time::sleep(self.options.latencies.pull).await;
        if self.draw_failure() {
            return Err(RuntimeError::Refused {
                status: 500,
                message: format!("injected failure pulling {reference} (hollow engine)"),
            });
        }
        self.publish(reference);
        self.engine.pull(reference, progress).await
    }

    async fn create(&self, request: &CreateRequest) -> Result<String> {
        tokio::time::sleep(self.options.latencies.create).await;
        self.engine.create(request).await
    }

    async fn start(&self, id: &str) -> Result<()> {
        tokio::time::sleep(self.options.latencies.start).await;
        self.engine.start(id).await
    }

    async fn stop(&self, id: &str, timeout: Duration) -> Result<()> {
        tokio::time::sleep(self.options.latencies.stop).await;
        self.engine.stop(id, timeout).await
    }

    async fn kill(&self, id: &str, signal: &str) -> Result<()> {
        self.engine.kill(id, signal).await
    }

    async fn unpause(&self, id: &str) -> Result<()> {
        self.engine.unpause(id).await
    }

    async fn rename(&self, id: &str, new_name: &str) -> Result<()> {
        self.engine.rename(id, new_name).await
    }

    async fn remove(&self, id: &str) -> Result<()> {
        self.engine.remove(id).await
    }

    async fn update(&self, id: &str, config: &ContainerConfig) -> Result<()> {
        self.engine.update(id, config).await
    }

    async fn logs(&self, id: &str) -> Result<String> {
        self.engine.logs(id).await
    }

    async fn exec(&self, id: &str, cmd: &[String]) -> Result<ExecOutput> {
        self.engine.exec(id, cmd).await
    }

    async fn host_path_exists(&self, _path: &str) -> Option<bool> {
        // A hollow device has every host path a document names.
        Some(true)
    }

    fn events(&self) -> EventStream {
        self.engine.events()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::block_on;

    const IMAGE: &str = "127.0.0.1:5000/app:2";

    fn quick(failure_rate: f64) -> Hollow {
        Hollow::new(Options {
            latencies: Latencies {
                pull: Duration::ZERO,
                create: Duration::ZERO,
                start: Duration::ZERO,
                stop: Duration::ZERO,
            },
            failure_rate,
            seed: 7,
        })
    }

    #[test]
    fn any_image_can_be_pulled_and_is_then_local() {
        let h = quick(0.0);
        block_on(async {
            assert!(h.image(IMAGE).await.unwrap().is_none());
            h.pull(IMAGE, &|_| {}).await.unwrap();
            let image = h.image(IMAGE).await.unwrap().expect("pulled");
            assert_eq!(image.repo_digests.len(), 1);
            assert!(
                image.repo_digests[0].starts_with("127.0.0.1:5000/app@sha256:"),
                "{:?}",
                image.repo_digests
            );
        });
    }

    #[test]
    fn the_registry_digest_is_the_pulled_images() {
        let h = quick(0.0);
        block_on(async {
            let digest = h.registry_digest(IMAGE).await.unwrap();
            h.pull(IMAGE, &|_| {}).await.unwrap();
            let image = h.image(IMAGE).await.unwrap().expect("pulled");
            assert!(image.repo_digests[0].ends_with(&digest), "{digest}");
        });
    }

    #[test]
    fn a_failure_rate_of_one_fails_every_pull_and_zero_none() {
        let always = quick(1.0);
        let never = quick(0.0);
        block_on(async {
            for _ in 0..20 {
                assert!(always.pull(IMAGE, &|_| {}).await.is_err());
                assert!(never.pull(IMAGE, &|_| {}).await.is_ok());
            }
        });
    }

    #[test]
    fn a_failure_rate_fails_about_that_share_of_pulls() {
        let h = quick(0.05);
        let failed = block_on(async {
            let mut n = 0;
            for _ in 0..2000 {
                if h.pull(IMAGE, &|_| {}).await.is_err() {
                    n += 1;
                }
            }
            n
        });
        // 100 expected; 5 standard deviations either side.
        assert!((50..=150).contains(&failed), "{failed}");
    }

    #[test]
    fn pulls_take_their_latency() {
        let h = Hollow::new(Options {
            latencies: Latencies {
                pull: Duration::from_millis(100),
                ..Latencies::default()
            },
            ..Options::default()
        });
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async {
            let t0 = tokio::time::Instant::now();
            h.pull(IMAGE, &|_| {}).await.unwrap();
            assert!(t0.elapsed() >= Duration::from_millis(100));
        });
    }
}
