//! Runs as `vishwa get RUN -o json` shows them, with the questions the crash tests ask.

use serde::Deserialize;

/// A run.
#[derive(Debug, Clone, Deserialize)]
pub struct RunView {
    pub run_id: String,
    pub state: String,
    pub message: Option<String>,
    pub stages: Vec<StageView>,
    #[serde(default)]
    pub retries: Vec<RetryView>,
}

/// One stage instance of a run.
#[derive(Debug, Clone, Deserialize)]
pub struct StageView {
    pub name: String,
    pub state: String,
    pub worker: Option<String>,
    pub message: Option<String>,
    pub attempts: Vec<AttemptView>,
}

/// One attempt of a stage instance.
#[derive(Debug, Clone, Deserialize)]
pub struct AttemptView {
    pub id: String,
    pub number: u32,
    pub worker: String,
    pub started: Option<String>,
    pub finished: Option<String>,
    pub outcome: String,
    pub exit_code: Option<i64>,
    pub message: Option<String>,
}

/// One `vishwa retry` of a run.
#[derive(Debug, Clone, Deserialize)]
pub struct RetryView {
    pub mode: String,
    pub stages: Vec<String>,
}

impl RunView {
    pub fn is_final(&self) -> bool {
        matches!(self.state.as_str(), "succeeded" | "failed" | "cancelled")
    }

    /// The stage instance `name`; panics if the run has none.
    pub fn stage(&self, name: &str) -> &StageView {
        self.stages
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("run {} has no stage {name}", self.run_id))
    }

    /// Every attempt of the run, with its stage.
    pub fn attempts(&self) -> impl Iterator<Item = (&StageView, &AttemptView)> {
        self.stages
            .iter()
            .flat_map(|s| s.attempts.iter().map(move |a| (s, a)))
    }

    /// Attempts currently running on `worker`.
    pub fn running_on(&self, worker: &str) -> Vec<&AttemptView> {
        self.attempts()
            .filter(|(_, a)| a.outcome == "running" && a.worker == worker)
            .map(|(_, a)| a)
            .collect()
    }

    /// How many stage instances are in `state`.
    pub fn count(&self, state: &str) -> usize {
        self.stages.iter().filter(|s| s.state == state).count()
    }

    /// One line per stage that did not succeed at its first attempt, for failure messages.
    pub fn summary(&self) -> String {
        let mut out = format!(
            "run {} {} ({} stages: {} succeeded, {} running, {} queued, {} pending){}\n",
            self.run_id,
            self.state,
            self.stages.len(),
            self.count("succeeded"),
            self.count("running"),
            self.count("queued"),
            self.count("pending"),
            self.message
                .as_deref()
                .map(|m| format!(": {m}"))
                .unwrap_or_default()
        );
        for s in &self.stages {
            let plain = s.state == "succeeded" && s.attempts.len() == 1;
            if plain {
                continue;
            }
            out.push_str(&format!("  {} {}", s.name, s.state));
            if let Some(m) = &s.message {
                out.push_str(&format!(" ({m})"));
            }
            for a in &s.attempts {
                out.push_str(&format!(
                    "\n    #{} {} on {} exit {:?} {}",
                    a.number,
                    a.outcome,
                    a.worker,
                    a.exit_code,
                    a.message.as_deref().unwrap_or("")
                ));
            }
            out.push('\n');
        }
        out
    }
}

impl StageView {
    /// Attempts that exited 0: the stage's recorded completions.
    pub fn completions(&self) -> usize {
        self.attempts
            .iter()
            .filter(|a| a.outcome == "succeeded" && a.exit_code == Some(0))
            .count()
    }
}

impl AttemptView {
    /// When the attempt was dispatched, in ms since the epoch.
    pub fn started_ms(&self) -> Option<i64> {
        self.started.as_deref().map(parse_ms)
    }

    /// When the attempt ended, in ms since the epoch.
    pub fn finished_ms(&self) -> Option<i64> {
        self.finished.as_deref().map(parse_ms)
    }
}

fn parse_ms(text: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("bad time {text}: {e}"))
        .timestamp_millis()
}
