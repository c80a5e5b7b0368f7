//! The environment each component has now, for `allow_env_change`: a
//! document may only change the env of the components the policy names.
//!
//! Env often carries credentials and endpoints (a broker URL, a token), so a
//! publisher that may roll out a new image version is not necessarily one
//! that may point the service somewhere else. Only variable *names* ever
//! leave this module; values are compared, never shown.

use std::collections::{BTreeMap, BTreeSet};

use crate::observe::{Observed, ObservedContainer};
use crate::plan::{temporary, Temporary};
use crate::runtime::ImageDetails;
use crate::spec::DesiredState;

/// What each component's environment is now, to compare a document with.
///
/// A component without a baseline (a new one) may set any env: there is
/// nothing to change yet.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EnvBaseline {
    components: BTreeMap<String, Current>,
}

#[derive(Debug, Clone, PartialEq)]
enum Current {
    /// The env a document berth enforces now gives (set, or removed).
    Declared(BTreeMap<String, Option<String>>),
    /// The env a container runs with, and its image's defaults.
    Running {
        env: BTreeMap<String, String>,
        image: BTreeMap<String, String>,
    },
}

impl EnvBaseline {
    /// No baseline: every component counts as new.
    pub fn none() -> Self {
        Self::default()
    }

    /// The env of the document the agent enforces now: a change is any
    /// difference in what the two documents say.
    pub fn from_desired(current: &DesiredState) -> Self {
        Self {
            components: current
                .containers
                .iter()
                .map(|c| (c.name.clone(), Current::Declared(c.config.env.clone())))
                .collect(),
        }
    }

    /// The env the containers on the engine run with, for the CLI (which has
    /// no enforced document). `images` are the containers' images by image
    /// id ([`crate::observe::images_of`]): a variable the image sets, with
    /// the image's value, is left to the image and never counts as a change,
    /// as in the planner.
    ///
    /// A component that an interrupted activity left only under its old
    /// temporary name (`web.berth-old`) has that container's env as its
    /// baseline: recovery brings it back under its name, so it is not new.
    pub fn from_observed(observed: &Observed, images: &BTreeMap<String, ImageDetails>) -> Self {
        let mut components: BTreeMap<String, Current> = observed
            .containers
            .iter()
            .map(|c| (c.name().to_string(), running(c, images)))
            .collect();
        for c in &observed.containers {
            if let Some((base, Temporary::Old)) = temporary(c.name()) {
                components
                    .entry(base.to_string())
                    .or_insert_with(|| running(c, images));
            }
        }
        Self { components }
    }

    /// Whether `name` has a baseline at all.
    pub fn knows(&self, name: &str) -> bool {
        self.components.contains_key(name)
    }

    /// The names of the variables `desired` would change for component
    /// `name`, sorted; `None` when the component has no baseline.
    pub fn changes(
        &self,
        name: &str,
        desired: &BTreeMap<String, Option<String>>,
    ) -> Option<BTreeSet<String>> {
        let current = self.components.get(name)?;
        let mut changed = BTreeSet::new();
        match current {
            Current::Declared(env) => {
                for (k, v) in desired {
                    if env.get(k) != Some(v) {
                        changed.insert(k.clone());
                    }
                }
                for k in env.keys() {
                    if !desired.contains_key(k) {
                        changed.insert(k.clone());
                    }
                }
            }
            Current::Running { env, image } => {
                for (k, v) in desired {
                    let same = match v {
                        Some(v) => env.get(k) == Some(v),
                        None => !env.contains_key(k),
                    };
                    if !same {
                        changed.insert(k.clone());
                    }
                }
                for (k, have) in env {
                    if !desired.contains_key(k) && image.get(k) != Some(have) {
                        changed.insert(k.clone());
                    }
                }
            }
        }
        Some(changed)
    }
}

/// A running container's env, and its image's defaults.
fn running(c: &ObservedContainer, images: &BTreeMap<String, ImageDetails>) -> Current {
    let env = c
        .config
        .env
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| (k.clone(), v.clone())))
        .collect();
    let image = images
        .get(&c.details.image_id)
        .map(|i| {
            i.env
                .iter()
                .filter_map(|e| e.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .unwrap_or_default();
    Current::Running { env, image }
}
