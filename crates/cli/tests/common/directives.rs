//! Helpers of the directive tests, shared by the `all` and `cluster` test
//! binaries (each includes this file).

use std::time::{Duration, Instant};

use colony_client::{Client, DeployOptions, TaskQuery};
use colony_core::TaskState;
use colony_core::wire::TaskInfo;

/// Deploys the builtins `square`, `add` and `echo` under their names.
pub(crate) async fn deploy_builtins(client: &Client) {
    let builtin = DeployOptions {
        executor: Some("builtin".into()),
        ..Default::default()
    };
    for name in ["square", "add", "echo"] {
        client.deploy(name, name, &builtin).await.unwrap();
    }
}

/// The tasks of a directive (in `state`, when given).
pub(crate) async fn directive_tasks(
    client: &Client,
    directive: &str,
    state: Option<TaskState>,
) -> Vec<TaskInfo> {
    let query = TaskQuery {
        state,
        directive: Some(directive.to_owned()),
        limit: Some(1000),
        ..Default::default()
    };
    client.all_tasks(&query).await.unwrap()
}

/// Waits until no task of the directive is queued or running, from
/// `since` (when its error returned), asserting that it takes at most
/// `limit`; returns how long it took.
pub(crate) async fn settled(
    client: &Client,
    directive: &str,
    since: Instant,
    limit: Duration,
) -> Duration {
    loop {
        let left: Vec<_> = directive_tasks(client, directive, None)
            .await
            .into_iter()
            .filter(|t| !t.state.is_terminal())
            .collect();
        if left.is_empty() {
            return since.elapsed();
        }
        assert!(
            since.elapsed() < limit,
            "{} tasks of {directive} unfinished after {limit:?}: {left:?}",
            left.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
