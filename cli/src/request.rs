//! What `celeriac inspect` and `celeriac control` send: a typed [`ControlCommand`] (its arguments are the ones
//! Celery's CLI sends), or the bare method name with no arguments for names the CLI has no command for, so the
//! workers' own answer (`KeyError('name')`, a `TypeError`) is what the user sees.

use celeriac_control::ControlClient;
use celery_proto::command::ControlCommand;
use serde_json::{Map, Value};
use std::time::Duration;

/// One request of the command line.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The method name as given on the command line: an alias (`dump_tasks`) goes out under that name, which the
    /// workers know as well as the command's canonical one.
    pub method: String,
    /// The typed command, `None` for a bare name.
    pub command: Option<ControlCommand>,
}

impl Request {
    pub fn new(method: &str, command: Option<ControlCommand>) -> Request {
        Request {
            method: method.to_string(),
            command,
        }
    }

    /// The `arguments` object sent: the command's, `{}` for a bare name.
    pub fn arguments(&self) -> Map<String, Value> {
        self.command
            .as_ref()
            .map(ControlCommand::arguments)
            .unwrap_or_default()
    }

    /// Do workers answer it? Not `shutdown` and `election`; a bare name is asked for replies.
    pub fn replies(&self) -> bool {
        self.command.as_ref().is_none_or(ControlCommand::replies)
    }

    /// Broadcast it, collecting the replies when it has any.
    pub async fn send(
        &self,
        client: &ControlClient,
        destination: Option<Vec<String>>,
        timeout: Duration,
    ) -> anyhow::Result<Vec<(String, Value)>> {
        Ok(client
            .broadcast(
                &self.method,
                Value::Object(self.arguments()),
                destination,
                self.replies(),
                timeout,
                None,
            )
            .await?)
    }
}
