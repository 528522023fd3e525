//! The closed vocabularies (statuses, actions, event types: each enum has a stable one-byte code,
//! used in index keys, and a wire name, used in JSON). The open ones, `AgentType` and
//! `ArtifactType`, are names a team chooses (`names`).

/// What every vocabulary enum offers.
pub trait Vocabulary: Sized + Copy + 'static {
    /// The kind of value, as named in error messages (`agent_type`, `status`, …).
    const KIND: &'static str;
    /// Every value, in code order.
    const ALL: &'static [Self];
    fn as_str(self) -> &'static str;
    fn code(self) -> u8;
    fn parse(text: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|v| v.as_str() == text)
    }
    fn from_code(code: u8) -> Option<Self> {
        Self::ALL.get(usize::from(code)).copied()
    }
    /// `a, b, c`: the allowed values, for error messages.
    fn allowed() -> String {
        Self::ALL
            .iter()
            .map(|v| v.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

macro_rules! vocabulary {
    ($(#[$meta:meta])* $name:ident, $kind:literal { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[repr(u8)]
        pub enum $name { $($variant),+ }

        impl Vocabulary for $name {
            const KIND: &'static str = $kind;
            const ALL: &'static [Self] = &[$($name::$variant),+];
            fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
            fn code(self) -> u8 {
                self as u8
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

vocabulary!(
    /// Where a task stands.
    TaskStatus, "status" {
        Pending => "pending",
        Working => "working",
        Completed => "completed",
        Failed => "failed",
        Cancelled => "cancelled",
    }
);

vocabulary!(
    /// What an agent is doing.
    AgentStatus, "status" {
        Idle => "idle",
        Working => "working",
        WaitingForHitl => "waiting_for_hitl",
        Error => "error",
    }
);

vocabulary!(
    /// Where a human-in-the-loop request stands.
    HitlStatus, "status" {
        Pending => "pending",
        Approved => "approved",
        Rejected => "rejected",
        Amended => "amended",
        Expired => "expired",
    }
);

vocabulary!(
    /// A human's answer to a HITL request.
    HitlAction, "action" {
        Approve => "approve",
        Reject => "reject",
        Amend => "amend",
    }
);

vocabulary!(
    /// How much a human gates a project's workflow.
    OversightLevel, "level" {
        High => "high",
        Medium => "medium",
        Low => "low",
    }
);

vocabulary!(
    /// The life of a project.
    ProjectStatus, "status" {
        Active => "active",
        Completed => "completed",
    }
);

vocabulary!(
    /// Every kind of event the log records.
    EventType, "event_type" {
        ProjectCreated => "project_created",
        TaskCreated => "task_created",
        TaskStarted => "task_started",
        TaskCompleted => "task_completed",
        TaskFailed => "task_failed",
        TaskCancelled => "task_cancelled",
        TaskRetried => "task_retried",
        TaskLeaseExpired => "task_lease_expired",
        TaskReopened => "task_reopened",
        AgentStatusChange => "agent_status_change",
        ArtifactCreated => "artifact_created",
        ArtifactUpdated => "artifact_updated",
        ArtifactDeleted => "artifact_deleted",
        HitlRequestCreated => "hitl_request_created",
        HitlResponse => "hitl_response",
        HitlExpired => "hitl_expired",
        OversightLevelChanged => "oversight_level_changed",
        WorkflowEvent => "workflow_event",
        AlertFiring => "alert_firing",
        AlertResolved => "alert_resolved",
        QueuePaused => "queue_paused",
        QueueResumed => "queue_resumed",
        QueueLimitChanged => "queue_limit_changed",
        ProjectPaused => "project_paused",
        ProjectResumed => "project_resumed",
        HitlTimedOut => "hitl_timed_out",
        HitlEscalated => "hitl_escalated",
        BudgetWarning => "budget_warning",
        BudgetExhausted => "budget_exhausted",
        BudgetRestored => "budget_restored",
        TaskHeld => "task_held",
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trips<V: Vocabulary + PartialEq + std::fmt::Debug>() {
        for (i, v) in V::ALL.iter().enumerate() {
            assert_eq!(usize::from(v.code()), i);
            assert_eq!(V::parse(v.as_str()), Some(*v));
            assert_eq!(V::from_code(v.code()), Some(*v));
        }
        assert_eq!(V::parse("no-such-value"), None);
        assert_eq!(V::from_code(u8::try_from(V::ALL.len()).unwrap()), None);
    }

    #[test]
    fn every_vocabulary_round_trips() {
        round_trips::<TaskStatus>();
        round_trips::<AgentStatus>();
        round_trips::<HitlStatus>();
        round_trips::<OversightLevel>();
        round_trips::<HitlAction>();
        round_trips::<ProjectStatus>();
        round_trips::<EventType>();
    }

    #[test]
    fn allowed_lists_every_value() {
        assert_eq!(HitlAction::allowed(), "approve, reject, amend");
    }
}
