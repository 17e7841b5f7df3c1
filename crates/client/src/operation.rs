//! Typed operations and the map/fold directives over them.
//!
//! An [`Operation<I, O>`] is a deployed function (wasm or builtin) seen
//! through serde: its input is an `I`, its output an `O`, both in a wire
//! [`Format`] the function speaks. [`Client::map`] runs it over many
//! inputs as a [`crate::Directive`]; [`Map`] collects or folds the
//! results as they arrive.
//!
//! ```no_run
//! # async fn demo() -> Result<(), colony_client::Error> {
//! use colony_client::{Client, Operation};
//! let colony = Client::new("http://127.0.0.1:8080")?;
//! // Two builtins: `colony deploy square --executor builtin square`, and
//! // `colony deploy add --executor builtin add`.
//! let square = Operation::<u64, u64>::new("square");
//! let add = Operation::<(u64, u64), u64>::new("add");
//! let sum = colony.map(&square, 1..=100_000u64).fold_op(&add, 0).await?;
//! assert_eq!(sum, 333_338_333_350_000);
//! # Ok(()) }
//! ```

use std::marker::PhantomData;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::directive::{AbortHandle, Directive, DirectiveOptions, Input, Ranges, Stats, Tag};
use crate::{Client, Error, Result};

/// How an operation's inputs and outputs are encoded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Format {
    /// JSON (what the `square` and `add` builtins speak).
    #[default]
    Json,
    /// MessagePack: compact and binary, for functions that speak it.
    MessagePack,
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Format::Json => "JSON",
            Format::MessagePack => "MessagePack",
        })
    }
}

/// A deployed function with a typed input `I` and output `O`.
pub struct Operation<I, O> {
    function: Arc<str>,
    format: Format,
    _types: PhantomData<fn(I) -> O>,
}

impl<I, O> Clone for Operation<I, O> {
    fn clone(&self) -> Self {
        Self {
            function: self.function.clone(),
            format: self.format,
            _types: PhantomData,
        }
    }
}

impl<I, O> std::fmt::Debug for Operation<I, O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Operation")
            .field("function", &self.function)
            .field("format", &self.format)
            .finish()
    }
}

impl<I: Serialize, O: DeserializeOwned> Operation<I, O> {
    /// The function `function`: a name (its default revision when each
    /// task is submitted) or `name@rev`.
    pub fn new(function: impl Into<String>) -> Self {
        Self {
            function: Arc::from(function.into()),
            format: Format::Json,
            _types: PhantomData,
        }
    }

    /// Pinned to revision `rev` (a prefix of its id or `#n`).
    pub fn at_revision(self, rev: &str) -> Self {
        let name = self.function.split('@').next().unwrap_or_default();
        Self {
            function: Arc::from(format!("{name}@{rev}")),
            ..self
        }
    }

    /// In wire format `format`.
    pub fn with_format(self, format: Format) -> Self {
        Self { format, ..self }
    }

    /// The function, `name` or `name@rev`.
    pub fn function(&self) -> &str {
        &self.function
    }

    /// The wire format.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Encodes an input.
    pub fn encode(&self, input: &I) -> Result<Bytes> {
        encode(self.format, &self.function, input)
    }

    /// Decodes an output.
    pub fn decode(&self, output: &[u8]) -> Result<O> {
        let value = match self.format {
            Format::Json => serde_json::from_slice(output).map_err(|e| e.to_string()),
            Format::MessagePack => rmp_serde::from_slice(output).map_err(|e| e.to_string()),
        };
        value.map_err(|reason| Error::Codec {
            function: self.function.to_string(),
            format: self.format,
            reason: format!("cannot decode an output ({} bytes): {reason}", output.len()),
        })
    }

    /// Runs it once, synchronously (`POST /run`).
    pub async fn call(&self, client: &Client, input: &I) -> Result<O> {
        let out = client.invoke(&self.function, self.encode(input)?).await?;
        self.decode(&out.output)
    }
}

/// A fold whose directive ended before every result was in (a server
/// that lost tasks, not a task's failure).
fn unfolded(url: String) -> Error {
    Error::Protocol {
        url,
        reason: "the directive ended before every result was folded".into(),
    }
}

fn encode<T: Serialize + ?Sized>(format: Format, function: &str, value: &T) -> Result<Bytes> {
    let bytes = match format {
        Format::Json => serde_json::to_vec(value).map_err(|e| e.to_string()),
        Format::MessagePack => rmp_serde::to_vec(value).map_err(|e| e.to_string()),
    };
    bytes.map(Bytes::from).map_err(|reason| Error::Codec {
        function: function.to_owned(),
        format,
        reason: format!("cannot encode a value: {reason}"),
    })
}

impl Client {
    /// Maps `op` over `inputs`: one durable task per input, run as the
    /// returned [`Map`] is collected or folded.
    pub fn map<I, O, It>(&self, op: &Operation<I, O>, inputs: It) -> Map<I, O>
    where
        I: Serialize + Send + 'static,
        O: DeserializeOwned,
        It: IntoIterator<Item = I>,
        It::IntoIter: Send + 'static,
    {
        self.map_stream(op, futures_util::stream::iter(inputs))
    }

    /// Like [`Client::map`], over a stream of inputs.
    pub fn map_stream<I, O, S>(&self, op: &Operation<I, O>, inputs: S) -> Map<I, O>
    where
        I: Serialize + Send + 'static,
        O: DeserializeOwned,
        S: futures_util::Stream<Item = I> + Send + 'static,
    {
        Map {
            client: self.clone(),
            op: op.clone(),
            inputs: inputs.boxed(),
            options: DirectiveOptions::default(),
            abort: AbortHandle::default(),
        }
    }
}

/// A map directive, not yet run: set its options, then collect or fold.
pub struct Map<I, O> {
    client: Client,
    op: Operation<I, O>,
    inputs: BoxStream<'static, I>,
    options: DirectiveOptions,
    abort: AbortHandle,
}

impl<I, O> std::fmt::Debug for Map<I, O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Map")
            .field("op", &self.op)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl<I, O> Map<I, O>
where
    I: Serialize + Send + 'static,
    O: Serialize + DeserializeOwned + Send + 'static,
{
    /// At most `n` tasks unfinished at once (default 256).
    pub fn window(mut self, n: usize) -> Self {
        self.options.window = n.max(1);
        self
    }

    /// All options at once.
    pub fn options(mut self, options: DirectiveOptions) -> Self {
        self.options = options;
        self
    }

    /// A handle that aborts the directive once it runs.
    pub fn abort_handle(&self) -> AbortHandle {
        self.abort.clone()
    }

    async fn open(self) -> Result<(Directive, Operation<I, O>)> {
        let op = self.op.clone();
        let enc = self.op.clone();
        // An input that cannot be encoded aborts the directive.
        let inputs = self
            .inputs
            .map(move |i| enc.encode(&i).map(Input::new))
            .boxed();
        let mut d = Directive::open(&self.client, op.function(), inputs, self.options).await?;
        d.set_abort(self.abort);
        Ok((d, op))
    }

    /// Calls `f` with each result as it arrives (input index, output); a
    /// failed task aborts the directive and returns its error.
    pub async fn for_each(self, mut f: impl FnMut(u64, O)) -> Result<Stats> {
        let (mut d, op) = self.open().await?;
        while let Some(next) = d.next().await {
            let (tag, outcome) = next?;
            let out = match outcome.and_then(|b| op.decode(&b)) {
                Ok(out) => out,
                Err(e) => {
                    d.abort().await;
                    return Err(e);
                }
            };
            if let Tag::Input(n) = tag {
                f(n, out);
            }
        }
        Ok(d.stats())
    }

    /// The results in input order.
    pub async fn collect(self) -> Result<Vec<O>> {
        let mut got = std::collections::BTreeMap::new();
        self.for_each(|n, o| {
            got.insert(n, o);
        })
        .await?;
        Ok(got.into_values().collect())
    }

    /// The results in the order they arrived, with their input index.
    pub async fn collect_unordered(self) -> Result<Vec<(u64, O)>> {
        let mut got = Vec::new();
        self.for_each(|n, o| got.push((n, o))).await?;
        Ok(got)
    }

    /// Folds the results with an associative `f`, as they arrive: each
    /// result is combined with its neighbours' as soon as they are there,
    /// in input order, so `f` need not be commutative and the fold does
    /// not wait for the slowest task. `init` comes first.
    pub async fn fold(self, init: O, mut f: impl FnMut(O, O) -> O) -> Result<O> {
        let url = self.client.base().to_owned();
        let mut ranges = Ranges::default();
        let _ = ranges.add(0, 1, init);
        let mut n = 0;
        self.for_each(|i, out| {
            n = n.max(i + 1);
            ranges.add_with(i + 1, i + 2, out, &mut f);
        })
        .await?;
        ranges.whole(n + 1).ok_or_else(|| unfolded(url))
    }

    /// Folds the results with the remote operation `combine` (a function
    /// taking `[a, b]`, e.g. the `add` builtin), as they arrive: each
    /// combination is one more task of the directive, of two neighbouring
    /// ranges of results, so `combine` need only be associative. `init`
    /// comes first. A failed combination aborts the directive like a
    /// failed input.
    pub async fn fold_op(self, combine: &Operation<(O, O), O>, init: O) -> Result<O> {
        let url = self.client.base().to_owned();
        let (mut d, op) = self.open().await?;
        let init = encode(combine.format, combine.function(), &init)?;
        let same = op.format == combine.format;
        let folded = d
            .fold(
                combine.function(),
                Some(init),
                |a, b| combine.encode(&(combine.decode(&a)?, combine.decode(&b)?)),
                // Results in the combination's format.
                |_, out| {
                    let v = op.decode(&out)?;
                    if same {
                        Ok(out)
                    } else {
                        encode(combine.format, combine.function(), &v)
                    }
                },
            )
            .await?
            .ok_or_else(|| unfolded(url))?;
        combine.decode(&folded)
    }

    /// Folds the results in the order they arrive with `f`, which must
    /// then not care about order (commutative as well as associative),
    /// into an accumulator of any type.
    pub async fn fold_unordered<A>(self, init: A, mut f: impl FnMut(A, O) -> A) -> Result<A> {
        let mut acc = Some(init);
        self.for_each(|_, o| acc = Some(f(acc.take().expect("set"), o)))
            .await?;
        Ok(acc.expect("set"))
    }
}
