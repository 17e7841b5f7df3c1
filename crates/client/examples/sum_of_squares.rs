//! The sum of the squares of 1..=100,000 as a directive:
//! `map(square).fold(add)`, each square and each addition a durable task
//! of the builtins `square` and `add` on a Colony worker (or cluster).
//!
//! ```text
//! colony serve &
//! cargo run -p colony-client --example sum_of_squares -- http://127.0.0.1:8080
//! ```

use std::time::Instant;

use colony_client::{Client, DeployOptions, Operation};

#[tokio::main]
async fn main() -> Result<(), colony_client::Error> {
    let server = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "http://127.0.0.1:8080".into());
    let n: u64 = std::env::args()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let colony = Client::new(&server)?;
    let builtin = DeployOptions {
        executor: Some("builtin".into()),
        ..Default::default()
    };
    colony.deploy("square", "square", &builtin).await?;
    colony.deploy("add", "add", &builtin).await?;

    let square = Operation::<u64, u64>::new("square");
    let add = Operation::<(u64, u64), u64>::new("add");
    let started = Instant::now();
    let sum = colony.map(&square, 1..=n).fold_op(&add, 0).await?;
    let took = started.elapsed();
    assert_eq!(
        u128::from(sum),
        u128::from(n) * u128::from(n + 1) * u128::from(2 * n + 1) / 6
    );
    println!(
        "sum of squares 1..={n} = {sum} ({} tasks in {took:.2?})",
        2 * n
    );
    Ok(())
}
