//! Progress feedback in Kanto's `desiredstatefeedback` format. Pure: the
//! [`Tracker`] keeps every action's latest status and renders the full
//! message each time, as Kanto's agent does (every message carries the whole
//! action list).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::plan::{Action, Plan};

/// Overall status of an activity (Kanto's `StatusType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[allow(missing_docs)]
pub enum Status {
    Identifying,
    Identified,
    IdentificationFailed,
    Running,
    Completed,
    Incomplete,
    IncompleteInconsistent,
    Superseded,
    Downloading,
    DownloadSuccess,
    DownloadFailure,
    Updating,
    UpdateSuccess,
    UpdateFailure,
    Activating,
    ActivationSuccess,
    ActivationFailure,
    Rollback,
    RollbackSuccess,
    RollbackFailure,
    Cleanup,
    CleanupSuccess,
    CleanupFailure,
}

impl Status {
    /// Whether the activity is over with this status.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Status::Completed
                | Status::Incomplete
                | Status::IncompleteInconsistent
                | Status::IdentificationFailed
                | Status::Superseded
        )
    }
}

/// The executor's words for the steps that Kanto's action statuses do not
/// tell apart, shared with whoever reads them back (the API's
/// `version-update` events), so a rewording cannot mislabel a phase.
pub mod words {
    /// DOWNLOAD_SUCCESS once the new container exists (not only its image).
    pub const NEW_CONTAINER_CREATED: &str = "New container created.";
    /// UPDATING while the old container of a recreate stops.
    pub const STOPPING_OLD: &str = "Stopping the old container.";
    /// UPDATE_SUCCESS once it has stopped.
    pub const OLD_STOPPED: &str = "Old container instance is stopped.";
}

/// Status of one action (Kanto's `ActionStatusType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[allow(missing_docs)]
pub enum ActionStatus {
    Identified,
    Downloading,
    DownloadSuccess,
    DownloadFailure,
    Updating,
    UpdateSuccess,
    UpdateFailure,
    Activating,
    ActivationSuccess,
    ActivationFailure,
    Removing,
    RemovalSuccess,
    RemovalFailure,
}

/// The component an action is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ComponentRef {
    /// `containers:<name>`.
    pub id: String,
    /// The component version.
    pub version: String,
}

/// One action's progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ActionFeedback {
    /// Which container.
    pub component: ComponentRef,
    /// Where it is.
    pub status: ActionStatus,
    /// Download progress, 0-100, while downloading.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<u8>,
    /// What happened, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The payload of a feedback message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FeedbackPayload {
    /// The baseline the command being answered named (orchestrated mode);
    /// absent when it named none, as Kanto sends it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<String>,
    /// The activity's status.
    pub status: Status,
    /// What happened, in words (failures and rejections).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Every action of the activity.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<ActionFeedback>,
}

/// A `desiredstatefeedback` message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(title = "berth desired-state feedback message")]
pub struct Feedback {
    /// The activity this is about.
    pub activity_id: String,
    /// When it was sent, in milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// The feedback.
    pub payload: FeedbackPayload,
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Keeps the latest status of every action and renders messages.
#[derive(Debug, Clone)]
pub struct Tracker {
    activity_id: String,
    domain: String,
    baseline: Option<String>,
    actions: Vec<(String, ActionFeedback)>,
}

impl Tracker {
    /// Starts with no actions (before identification).
    pub fn new(activity_id: &str, domain: &str) -> Self {
        Self {
            activity_id: activity_id.to_string(),
            domain: domain.to_string(),
            baseline: None,
            actions: Vec::new(),
        }
    }

    /// One action per container the plan touches or keeps (ignored ones are
    /// not berth's to report), each `IDENTIFIED` with what will happen.
    pub fn identified(&mut self, plan: &Plan) {
        self.actions = plan
            .actions
            .iter()
            .filter(|e| e.action != Action::Ignore)
            .map(|e| {
                let message = match e.action {
                    Action::Create => "New container will be created and started.".to_string(),
                    Action::Recreate => format!(
                        "Existing container will be replaced by a new one: {}.",
                        e.reasons.join("; ")
                    ),
                    Action::Update => format!(
                        "Existing container will be updated in place: {}.",
                        e.reasons.join("; ")
                    ),
                    Action::Start => format!(
                        "Existing container will be started: {}.",
                        e.reasons.join("; ")
                    ),
                    Action::Keep => "No changes detected.".to_string(),
                    Action::Remove => {
                        "Existing container will be removed, no longer needed.".to_string()
                    }
                    Action::Ignore => String::new(),
                };
                (
                    e.id.clone(),
                    ActionFeedback {
                        component: ComponentRef {
                            id: format!("{}:{}", self.domain, e.id),
                            version: e.version.clone().unwrap_or_else(|| "n/a".into()),
                        },
                        status: ActionStatus::Identified,
                        progress: None,
                        message: Some(message),
                    },
                )
            })
            .collect();
    }

    /// Sets one action's status and message.
    pub fn set(&mut self, name: &str, status: ActionStatus, message: impl Into<String>) {
        if let Some((_, a)) = self.actions.iter_mut().find(|(n, _)| n == name) {
            a.status = status;
            a.progress = None;
            a.message = Some(message.into());
        }
    }

    /// Sets one action's download progress.
    pub fn progress(&mut self, name: &str, percent: u8) {
        if let Some((_, a)) = self.actions.iter_mut().find(|(n, _)| n == name) {
            a.status = ActionStatus::Downloading;
            a.progress = Some(percent.min(100));
        }
    }

    /// Names `baseline` in every message from now on (the baseline of the
    /// command being answered); empty names none.
    pub fn answering(&mut self, baseline: &str) {
        self.baseline = (!baseline.is_empty()).then(|| baseline.to_string());
    }

    /// The domain components are named in (`containers:<name>`).
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// An action's current status.
    pub fn status_of(&self, name: &str) -> Option<ActionStatus> {
        self.actions
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| a.status)
    }

    /// The full message for an overall status.
    pub fn message(&self, status: Status, message: Option<String>) -> Feedback {
        Feedback {
            activity_id: self.activity_id.clone(),
            timestamp: now_ms(),
            payload: FeedbackPayload {
                baseline: self.baseline.clone(),
                status,
                message,
                actions: self.actions.iter().map(|(_, a)| a.clone()).collect(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::PlanEntry;

    fn plan() -> Plan {
        let entry = |id: &str, action| PlanEntry {
            id: id.into(),
            action,
            reasons: vec!["because".into()],
            diff: None,
            version: Some("1".into()),
            container_id: None,
            execution: Default::default(),
        };
        Plan {
            activity_id: "a".into(),
            actions: vec![entry("web", Action::Create), entry("agent", Action::Ignore)],
            warnings: vec![],
        }
    }

    #[test]
    fn ignored_containers_get_no_action() {
        let mut t = Tracker::new("a", "containers");
        t.identified(&plan());
        let m = t.message(Status::Identified, None);
        assert_eq!(m.payload.actions.len(), 1);
        assert_eq!(m.payload.actions[0].component.id, "containers:web");
    }

    #[test]
    fn status_words_are_kantos() {
        let mut t = Tracker::new("a", "containers");
        t.identified(&plan());
        t.progress("web", 40);
        let json = serde_json::to_value(t.message(Status::Downloading, None)).unwrap();
        assert_eq!(json["payload"]["status"], "DOWNLOADING");
        assert_eq!(json["payload"]["actions"][0]["status"], "DOWNLOADING");
        assert_eq!(json["payload"]["actions"][0]["progress"], 40);
        assert_eq!(json["activityId"], "a");
    }

    #[test]
    fn identification_failure_has_no_actions_key() {
        let t = Tracker::new("x", "containers");
        let json =
            serde_json::to_value(t.message(Status::IdentificationFailed, Some("bad".into())))
                .unwrap();
        assert!(json["payload"].get("actions").is_none());
        assert_eq!(json["payload"]["message"], "bad");
    }
}
