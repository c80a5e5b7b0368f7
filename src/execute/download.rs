//! DOWNLOADING: preflight, images, then the new containers under temporary
//! names. Nothing that runs is touched here; a failure leaves the device as
//! it was.

use std::collections::BTreeMap;

use futures_util::StreamExt;

use super::rollout::Run;
use super::ExecuteError;
use crate::feedback::{ActionStatus, Status};
use crate::journal::Effect;
use crate::labels;
use crate::observe::Observed;
use crate::plan::{Action, Pull};
use crate::runtime::{self, CreateRequest, Runtime};
use crate::spec::image::ImageRef;
use crate::spec::model::{ContainerSpec, HostTarget, NetworkMode};

impl<R: Runtime> Run<'_, R> {
    /// What the document needs and cannot have: a user network that does
    /// not exist, a device missing on the host (the engine would fail at
    /// start), a read-only bind-mount source missing on the host (the engine
    /// would mount an empty directory), a host port a container outside the
    /// plan holds. A missing writable bind-mount source is left to the
    /// engine, which creates it, as Docker and Kanto always have.
    pub(super) async fn preflight(&mut self, observed: &Observed) -> Result<(), ExecuteError> {
        let mut problems = Vec::new();
        // Containers whose ports the plan frees: the ones it replaces or removes.
        let freed: Vec<&str> = self
            .units
            .iter()
            .filter(|u| matches!(u.entry.action, Action::Recreate | Action::Remove))
            .filter_map(|u| u.old.map(|o| o.details.id.as_str()))
            .collect();
        for (i, u) in self.units.iter().enumerate() {
            let (Some(spec), Action::Create | Action::Recreate) = (u.spec, u.entry.action) else {
                continue;
            };
            if !self.focused(i) {
                continue;
            }
            if let NetworkMode::User(net) = &spec.config.network {
                if !observed.networks.contains(net) {
                    problems.push((
                        spec.name.clone(),
                        format!("network \"{net}\" does not exist; create it first"),
                    ));
                }
            }
            for d in &spec.config.devices {
                if self.rt.host_path_exists(&d.host_path).await == Some(false) {
                    problems.push((
                        spec.name.clone(),
                        format!("device {} does not exist on the host", d.host_path),
                    ));
                }
            }
            for m in &spec.config.mounts {
                if self.rt.host_path_exists(&m.source).await != Some(false) {
                    continue;
                }
                if m.read_only {
                    // An empty directory nobody may write to is never meant.
                    problems.push((
                        spec.name.clone(),
                        format!(
                            "read-only bind-mount source {} does not exist on the host",
                            m.source
                        ),
                    ));
                } else {
                    // As Docker and Kanto do: a data directory appears on first use.
                    tracing::warn!(container = %spec.name, source = %m.source, "bind-mount source does not exist; the engine creates it as an empty directory");
                }
            }
            for port in &spec.config.ports {
                let holder = observed.containers.iter().find(|c| {
                    !freed.contains(&c.details.id.as_str())
                        && c.details.name != spec.name
                        && c.details.state.status == runtime::Status::Running
                        && c.config.ports.iter().any(|p| p.conflicts_with(port))
                });
                if let Some(h) = holder {
                    problems.push((
                        spec.name.clone(),
                        format!(
                            "host port {port} is already bound by container {}",
                            h.name()
                        ),
                    ));
                }
            }
        }
        for (name, problem) in &problems {
            self.set(
                name,
                ActionStatus::DownloadFailure,
                format!("{problem}; nothing was changed"),
            );
        }
        match problems.into_iter().next() {
            None => Ok(()),
            Some((name, problem)) => Err(ExecuteError::Preflight { name, problem }),
        }
    }

    /// Pulls what the plan says to pull, one pull per image, reported on
    /// every container that needs it.
    pub(super) async fn pull_all(&mut self) -> Result<(), Vec<ExecuteError>> {
        let mut wanted: BTreeMap<String, (Pull, Vec<String>)> = BTreeMap::new();
        for (i, u) in self.units.iter().enumerate() {
            let (Some(spec), Action::Create | Action::Recreate) = (u.spec, u.entry.action) else {
                continue;
            };
            if !self.focused(i) {
                continue;
            }
            let e = wanted
                .entry(spec.config.image.to_string())
                .or_insert((u.entry.execution.pull, Vec::new()));
            // The strictest need wins: absent beats refresh beats present.
            e.0 = match (e.0, u.entry.execution.pull) {
                (Pull::Unavailable, _) | (_, Pull::Unavailable) => Pull::Unavailable,
                (Pull::Required, _) | (_, Pull::Required) => Pull::Required,
                (Pull::Refresh, _) | (_, Pull::Refresh) => Pull::Refresh,
                _ => Pull::No,
            };
            e.1.push(spec.name.clone());
        }
        let mut to_pull = Vec::new();
        let mut errors = Vec::new();
        for (image, (pull, names)) in wanted {
            match pull {
                Pull::Unavailable => {
                    let e = ExecuteError::ImageUnavailable { image };
                    for n in &names {
                        self.set(
                            n,
                            ActionStatus::DownloadFailure,
                            format!("{e}; nothing was changed"),
                        );
                    }
                    errors.push(e);
                }
                Pull::No => {
                    for n in &names {
                        self.set(
                            n,
                            ActionStatus::DownloadSuccess,
                            format!("image {image} is already present"),
                        );
                    }
                }
                Pull::Required | Pull::Refresh => to_pull.push((image, names, pull)),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        if to_pull.is_empty() {
            return Ok(());
        }
        for (_, names, _) in &to_pull {
            for n in names {
                self.tracker.progress(n, 0);
            }
        }
        self.emit(Status::Downloading, None);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(usize, u8)>();
        let rt = self.rt;
        let timeout = self.options.pull_timeout;
        let pulls = futures_util::stream::iter(to_pull.iter().enumerate())
            .map(move |(i, (image, _, _))| {
                let tx = tx.clone();
                async move {
                    let progress = move |p: runtime::PullProgress| {
                        let _ = tx.send((i, p.percent()));
                    };
                    let result =
                        match tokio::time::timeout(timeout, rt.pull(image, &progress)).await {
                            Ok(r) => r.map_err(|source| ExecuteError::PullFailed {
                                image: image.clone(),
                                source,
                            }),
                            Err(_) => Err(ExecuteError::PullTimedOut {
                                image: image.clone(),
                                after: timeout,
                            }),
                        };
                    (i, result)
                }
            })
            .buffer_unordered(self.options.parallel.max(1));
        tokio::pin!(pulls);
        let mut last: BTreeMap<usize, u8> = BTreeMap::new();
        let mut results: Vec<(usize, Result<(), ExecuteError>)> = Vec::new();
        let mut progress_open = true;
        while results.len() < to_pull.len() {
            tokio::select! {
                Some(done) = pulls.next() => results.push(done),
                update = rx.recv(), if progress_open => match update {
                    Some((i, percent)) => {
                        let previous = last.get(&i).copied().unwrap_or(0);
                        if percent >= previous.saturating_add(10) || (percent == 100 && previous < 100) {
                            last.insert(i, percent);
                            for n in &to_pull[i].1 {
                                self.tracker.progress(n, percent);
                            }
                            self.emit(Status::Downloading, None);
                        }
                    }
                    None => progress_open = false,
                },
                else => break,
            }
        }
        // Progress sent just before a pull finished still counts.
        while let Ok((i, percent)) = rx.try_recv() {
            if last.get(&i).copied().unwrap_or(0) < percent {
                last.insert(i, percent);
                for n in &to_pull[i].1 {
                    self.tracker.progress(n, percent);
                }
            }
        }
        if !last.is_empty() {
            self.emit(Status::Downloading, None);
        }
        for (i, result) in results {
            let (image, names, pull) = &to_pull[i];
            match result {
                Ok(()) => {
                    for n in names {
                        self.set(
                            n,
                            ActionStatus::DownloadSuccess,
                            format!("image {image} downloaded"),
                        );
                    }
                }
                // `always` with the image at hand: a registry outage is no
                // reason to stop the device from converging.
                Err(e) if *pull == Pull::Refresh => {
                    tracing::warn!(image = %image, error = %e, "pull failed; using the local image");
                    for n in names {
                        self.set(
                            n,
                            ActionStatus::DownloadSuccess,
                            format!("registry unavailable ({e}); using the local image {image}"),
                        );
                    }
                }
                Err(e) => {
                    for n in names {
                        self.set(
                            n,
                            ActionStatus::DownloadFailure,
                            format!("{e}; nothing was changed"),
                        );
                    }
                    errors.push(e);
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// The create request for unit `i`; `hosts` resolves `container_<name>`
    /// host entries.
    async fn request(
        &mut self,
        i: usize,
        hosts: &[runtime::ContainerDetails],
    ) -> Result<CreateRequest, ExecuteError> {
        let u = &self.units[i];
        let spec = u.spec.ok_or_else(|| ExecuteError::Preflight {
            name: u.entry.id.clone(),
            problem: "not in the document".into(),
        })?;
        let reference = spec.config.image.to_string();
        let local = match self.image_ids.get(&reference) {
            Some(local) => local.clone(),
            None => {
                let local = self
                    .rt
                    .image(&reference)
                    .await
                    .map_err(ExecuteError::step(&spec.name, "inspect its image"))?
                    .map(|i| Resolved {
                        pinned: pinned(&spec.config.image, &i.repo_digests),
                        id: i.id,
                    });
                self.image_ids.insert(reference, local.clone());
                local
            }
        };
        let mut config = spec.config.clone();
        if let Some(pinned) = local.as_ref().and_then(|l| l.pinned.clone()) {
            config.image = pinned;
        }
        let x = &u.entry.execution;
        Ok(CreateRequest {
            name: x.temp_new.clone(),
            config,
            labels: labels::for_spec(
                spec,
                local.as_ref().map(|l| l.id.as_str()),
                &self.options.instance,
            ),
            extra_hosts: resolve_hosts(spec, hosts).await?,
            inherited_volumes: x.inherited_volumes.clone(),
            networks: x.networks.clone(),
        })
    }

    /// Creates the new containers the plan makes early (every one not
    /// linked to a container the plan replaces), at once, journaled first.
    pub(super) async fn create_early(
        &mut self,
        observed: &Observed,
    ) -> Result<(), Vec<ExecuteError>> {
        let hosts: Vec<runtime::ContainerDetails> = observed
            .containers
            .iter()
            .map(|c| c.details.clone())
            .collect();
        let mut requests = Vec::new();
        let mut errors = Vec::new();
        for i in 0..self.units.len() {
            let u = &self.units[i];
            if !matches!(u.entry.action, Action::Create | Action::Recreate)
                || u.entry.execution.create_late
                || !self.focused(i)
            {
                continue;
            }
            match self.request(i, &hosts).await {
                Ok(r) => requests.push((i, r)),
                Err(e) => errors.push(e),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let mut records = Vec::new();
        for (i, r) in &requests {
            records.push((
                *i,
                Effect::Create {
                    name: self.units[*i].entry.id.clone(),
                    temp: r.name.clone(),
                    id: None,
                    image: Some(r.config.image.to_string()),
                },
            ));
        }
        let at = self
            .record_all(records.into_iter().map(|(_, e)| e).collect())
            .await
            .map_err(|e| vec![e])?;
        let rt = self.rt;
        let mut created: Vec<(usize, usize, runtime::Result<String>)> =
            futures_util::stream::iter(requests.into_iter().zip(at))
                .map(|((i, request), record)| async move { (i, record, rt.create(&request).await) })
                .buffer_unordered(self.options.parallel.max(1))
                .collect()
                .await;
        created.sort_by_key(|(i, _, _)| *i);
        for (i, record, result) in created {
            let name = self.units[i].entry.id.clone();
            match result {
                Ok(id) => {
                    self.created(i, record, id);
                    self.set(
                        &name,
                        ActionStatus::DownloadSuccess,
                        crate::feedback::words::NEW_CONTAINER_CREATED,
                    );
                }
                Err(source) => {
                    let e = ExecuteError::Step {
                        name: name.clone(),
                        step: "create the new container",
                        source,
                    };
                    self.set(
                        &name,
                        ActionStatus::DownloadFailure,
                        format!("{e}; nothing was changed"),
                    );
                    errors.push(e);
                }
            }
        }
        // The ids, so that a crash from here on removes exactly these.
        if let Err(e) = self.write().await {
            errors.push(e);
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// Creates one new container in ACTIVATING, right before it starts: the
    /// containers it links to run by now, under their names.
    pub(super) async fn create_late(&mut self, i: usize) -> Result<(), ExecuteError> {
        let name = self.units[i].entry.id.clone();
        let hosts = self
            .rt
            .list()
            .await
            .map_err(ExecuteError::step(&name, "list the containers it links to"))?;
        let request = self.request(i, &hosts).await?;
        let at = self
            .record(Effect::Create {
                name: name.clone(),
                temp: request.name.clone(),
                id: None,
                image: Some(request.config.image.to_string()),
            })
            .await?;
        let id = self
            .rt
            .create(&request)
            .await
            .map_err(ExecuteError::step(&name, "create the new container"))?;
        self.created(i, at, id);
        self.write().await
    }

    /// Notes a created container's id on its unit and its journal record.
    fn created(&mut self, i: usize, record: usize, new_id: String) {
        if let Effect::Create { id, .. } = &mut self.journal.records[record].effect {
            *id = Some(new_id.clone());
        }
        self.units[i].new_id = Some(new_id);
    }
}

/// The local image a reference names at DOWNLOADING, once pulled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Resolved {
    /// Its id, recorded on the container.
    pub id: String,
    /// The reference the container is created from: the digest the image
    /// was pulled as, so a tag moved or re-pulled between the pull and the
    /// create cannot change what runs. `None` for an image that came from no
    /// registry (built or loaded here): its tag is all there is.
    pub pinned: Option<ImageRef>,
}

/// `image` pinned to the one of `repo_digests` (`name@sha256:…`, as the
/// engine lists them) from the same repository; a reference with a digest
/// already is that digest alone (a tag beside it means nothing to the
/// engine); `None` when no digest is from its repository.
pub(super) fn pinned(image: &ImageRef, repo_digests: &[String]) -> Option<ImageRef> {
    if image.digest.is_some() {
        return Some(ImageRef {
            tag: None,
            ..image.clone()
        });
    }
    let digest = image.digest_from(repo_digests.iter().map(String::as_str))?;
    Some(ImageRef {
        tag: None,
        digest: Some(digest),
        ..image.clone()
    })
}

/// `container_<hostname>` and `host_ip_<iface>` targets become addresses;
/// `containers` are the ones that exist now.
async fn resolve_hosts(
    spec: &ContainerSpec,
    containers: &[runtime::ContainerDetails],
) -> Result<Vec<String>, ExecuteError> {
    let mut out = Vec::new();
    for h in &spec.config.extra_hosts {
        let target = match &h.target {
            HostTarget::Ip(ip) => ip.to_string(),
            HostTarget::HostGateway => "host-gateway".to_string(),
            HostTarget::HostInterface(iface) => {
                interface_address(iface)
                    .await
                    .map_err(|problem| ExecuteError::Preflight {
                        name: spec.name.clone(),
                        problem,
                    })?
            }
            HostTarget::Container(hostname) => containers
                .iter()
                .filter(|c| crate::plan::temporary(&c.name).is_none())
                .filter(|c| c.hostname == *hostname || c.name == *hostname)
                // A container sharing the target's network stack reports
                // its host name too, but has no address of its own.
                .find_map(|c| c.ips.values().next().cloned())
                .ok_or_else(|| ExecuteError::Preflight {
                    name: spec.name.clone(),
                    problem: format!("host {h}: no running container has host name {hostname}"),
                })?,
        };
        out.push(format!("{}:{target}", h.name));
    }
    Ok(out)
}

/// The IPv4 address of a host interface (`host_ip_<iface>`), via iproute2.
async fn interface_address(iface: &str) -> Result<String, String> {
    let out = tokio::process::Command::new("ip")
        .args(["-4", "-o", "addr", "show", "dev", iface])
        .output()
        .await
        .map_err(|e| format!("cannot run ip to find interface {iface}: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|cidr| cidr.split('/').next())
        .map(str::to_string)
        .ok_or_else(|| format!("host interface {iface} has no IPv4 address"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::desired;

    #[test]
    fn an_image_is_pinned_to_the_digest_from_its_own_repository() {
        let image = ImageRef::parse("127.0.0.1:5000/x/app:1").unwrap();
        let d = format!("sha256:{}", "a".repeat(64));
        let digests = [
            format!("127.0.0.1:5000/other@sha256:{}", "b".repeat(64)),
            format!("127.0.0.1:5000/x/app@{d}"),
        ];
        let pinned = pinned(&image, &digests).unwrap();
        assert_eq!(pinned.to_string(), format!("127.0.0.1:5000/x/app@{d}"));
    }

    #[test]
    fn an_image_from_no_registry_is_not_pinned() {
        let other = [format!("127.0.0.1:5000/other@sha256:{}", "b".repeat(64))];
        let image = ImageRef::parse("127.0.0.1:5000/x/app:1").unwrap();
        assert_eq!(pinned(&image, &other), None);
        assert_eq!(pinned(&image, &[]), None);
    }

    #[test]
    fn an_image_with_a_tag_and_a_digest_is_made_from_the_digest_alone() {
        let d = format!("sha256:{}", "a".repeat(64));
        let by_digest = ImageRef::parse(&format!("127.0.0.1:5000/x/app:1@{d}")).unwrap();
        let pinned = pinned(&by_digest, &[]).unwrap();
        assert_eq!(pinned.to_string(), format!("127.0.0.1:5000/x/app@{d}"));
    }

    #[test]
    fn a_docker_hub_image_is_pinned_under_its_full_name() {
        let image = ImageRef::parse("nginx:1.27").unwrap();
        let d = format!("sha256:{}", "c".repeat(64));
        let pinned = pinned(&image, &[format!("nginx@{d}")]).unwrap();
        assert_eq!(pinned.name(), image.name());
        assert_eq!(pinned.digest.as_deref(), Some(d.as_str()));
    }

    #[test]
    fn r18_a_host_entry_resolves_to_its_target_not_to_a_container_sharing_its_network() {
        // Regression: a sidecar on container:<db> reports db's host name but
        // has no address of its own; the host entry took it and found none.
        let d = desired(
            "a",
            &[(
                "client",
                &[
                    ("image", "127.0.0.1:5000/berth-test/service:1"),
                    ("host", "db.local:container_db-host"),
                ],
            )],
        );
        let sidecar = runtime::ContainerDetails {
            name: "sidecar".into(),
            hostname: "db-host".into(),
            ..Default::default()
        };
        let db = runtime::ContainerDetails {
            name: "db".into(),
            hostname: "db-host".into(),
            ips: [("bridge".to_string(), "172.17.0.9".to_string())].into(),
            ..Default::default()
        };
        let hosts = crate::test_support::block_on(resolve_hosts(&d.containers[0], &[sidecar, db]));
        assert_eq!(hosts.unwrap(), ["db.local:172.17.0.9"]);
    }
}
