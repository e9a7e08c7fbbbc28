//! Decoding log entries from their JSON without serde's buffering, for the commands that carry
//! most of the log's bytes (run batches, heartbeats).
//!
//! [`Command`] is an internally tagged enum (`{"type":"ingest_run_batches",...}`): serde's
//! derived decoder first copies the whole object into an intermediate tree (every string
//! allocated), then decodes the variant from that tree, which for a batch of run records costs
//! about as much again as decoding it. Every entry is decoded at least once per member (a
//! follower decodes what the leader sent, and every member decodes each entry again when it
//! applies it). The encoder always writes the tag first, so [`decode_entry`] reads the first key:
//! when it is the tag of one of the commands below, the rest of the object is decoded straight
//! into that variant's fields. Anything else (another command, a blank or membership entry, a tag
//! not first, malformed JSON) is decoded by the derived decoder, from the start: the values, and
//! the errors, are the derived decoder's. The JSON format does not change. [`decode_write`] does
//! the same for the commands followers forward to the leader (`/raft/write`).
//!
//! [`AppendRequest`] is the append request a follower receives, with each entry's JSON kept as
//! it was sent: the follower stores that text in its log as it is (see
//! [`super::log_store::Received`]) instead of encoding the entry again.

use std::fmt;

use chrono::{DateTime, Utc};
use op_proto::RunRecord;
use op_store::{Command, NodeBeat, NodeRuns};
use openraft::EntryPayload;
use openraft::raft::AppendEntriesRequest;
use serde::Deserialize;
use serde::de::{self, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;
use uuid::Uuid;

use super::messages::WriteRequest;
use super::types::{Entry, LogId, TypeConfig, Vote};

/// Decodes one log entry's JSON (as `serde_json::from_str::<Entry>` would).
pub fn decode_entry(text: &str) -> serde_json::Result<Entry> {
    match decode_fast(text) {
        Some(entry) => Ok(entry),
        None => serde_json::from_str::<Entry>(text),
    }
}

/// The entry, when it holds one of the commands decoded here, tag first, and decodes.
fn decode_fast(text: &str) -> Option<Entry> {
    let FastEntry {
        log_id,
        payload: FastPayload::Normal(FastCommand(command)),
    } = serde_json::from_str::<FastEntry>(text).ok()?;
    Some(Entry {
        log_id,
        payload: EntryPayload::Normal(command),
    })
}

/// Decodes a forwarded write's body (as `serde_json::from_slice::<WriteRequest>` would).
pub fn decode_write(body: &[u8]) -> serde_json::Result<WriteRequest> {
    #[derive(Deserialize)]
    struct FastWrite {
        command: FastCommand,
    }
    match serde_json::from_slice::<FastWrite>(body) {
        Ok(FastWrite {
            command: FastCommand(command),
        }) => Ok(WriteRequest { command }),
        Err(_) => serde_json::from_slice(body),
    }
}

/// An entry whose payload is a command decoded by [`FastCommand`]; any other entry is an error
/// (and [`decode_entry`] decodes it the derived way).
#[derive(Deserialize)]
struct FastEntry {
    log_id: LogId,
    payload: FastPayload,
}

/// openraft's `EntryPayload` (externally tagged) without `Blank` and `Membership`.
#[derive(Deserialize)]
enum FastPayload {
    Normal(FastCommand),
}

struct FastCommand(Command);

/// The fields of `Command::IngestRunBatches`. `tag` is set when the object holds the tag twice:
/// the derived decoder refuses that, so this decoder gives up on it.
#[derive(Deserialize)]
struct RunBatchesFields {
    at: DateTime<Utc>,
    batches: Vec<NodeRuns>,
    #[serde(rename = "type", default)]
    tag: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct RunsFields {
    node_id: Uuid,
    at: DateTime<Utc>,
    runs: Vec<RunRecord>,
    #[serde(rename = "type", default)]
    tag: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct BeatsFields {
    beats: Vec<NodeBeat>,
    #[serde(rename = "type", default)]
    tag: Option<IgnoredAny>,
}

/// The commands decoded here, by their tag.
#[derive(Clone, Copy)]
enum Hot {
    RunBatches,
    Runs,
    Beats,
}

/// A map key or tag value, read as a string without keeping it.
struct Word<F>(F);

impl<'de, T, F: FnOnce(&str) -> T> Visitor<'de> for Word<F> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        Ok((self.0)(v))
    }
}

/// Whether a key is the tag's.
struct IsTag(bool);

impl<'de> Deserialize<'de> for IsTag {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(Word(|k: &str| IsTag(k == "type")))
    }
}

/// The command a tag names, when it is one decoded here.
struct Tag(Option<Hot>);

impl<'de> Deserialize<'de> for Tag {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(Word(|t: &str| {
            Tag(match t {
                "ingest_run_batches" => Some(Hot::RunBatches),
                "ingest_runs" => Some(Hot::Runs),
                "heartbeats" => Some(Hot::Beats),
                _ => None,
            })
        }))
    }
}

/// Decodes the rest of `map` as `T`.
fn rest<'de, A: MapAccess<'de>, T: Deserialize<'de>>(map: A) -> Result<T, A::Error> {
    T::deserialize(de::value::MapAccessDeserializer::new(map))
}

fn twice<E: de::Error>() -> E {
    E::custom("the tag twice")
}

impl<'de> Deserialize<'de> for FastCommand {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = FastCommand;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a command whose tag comes first")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<FastCommand, A::Error> {
                if !matches!(map.next_key::<IsTag>()?, Some(IsTag(true))) {
                    return Err(de::Error::custom("the tag is not first"));
                }
                let Tag(hot) = map.next_value()?;
                let command = match hot {
                    None => return Err(de::Error::custom("not a command decoded here")),
                    Some(Hot::RunBatches) => {
                        let f: RunBatchesFields = rest(map)?;
                        if f.tag.is_some() {
                            return Err(twice());
                        }
                        Command::IngestRunBatches {
                            at: f.at,
                            batches: f.batches,
                        }
                    }
                    Some(Hot::Runs) => {
                        let f: RunsFields = rest(map)?;
                        if f.tag.is_some() {
                            return Err(twice());
                        }
                        Command::IngestRuns {
                            node_id: f.node_id,
                            at: f.at,
                            runs: f.runs,
                        }
                    }
                    Some(Hot::Beats) => {
                        let f: BeatsFields = rest(map)?;
                        if f.tag.is_some() {
                            return Err(twice());
                        }
                        Command::Heartbeats { beats: f.beats }
                    }
                };
                Ok(FastCommand(command))
            }
        }
        d.deserialize_map(V)
    }
}

/// The append request a follower receives, each entry still as the JSON it was sent as.
#[derive(Deserialize)]
pub struct AppendRequest<'a> {
    vote: Vote,
    prev_log_id: Option<LogId>,
    #[serde(borrow)]
    entries: Vec<&'a RawValue>,
    leader_commit: Option<LogId>,
}

impl<'a> AppendRequest<'a> {
    /// Reads a request body (the JSON of openraft's `AppendEntriesRequest`).
    pub fn parse(body: &'a [u8]) -> serde_json::Result<AppendRequest<'a>> {
        serde_json::from_slice(body)
    }

    /// The request, and each entry's JSON as it was sent.
    pub fn decode(self) -> serde_json::Result<(AppendEntriesRequest<TypeConfig>, Vec<&'a str>)> {
        let mut entries = Vec::with_capacity(self.entries.len());
        let mut texts = Vec::with_capacity(self.entries.len());
        for raw in self.entries {
            entries.push(decode_entry(raw.get())?);
            texts.push(raw.get());
        }
        Ok((
            AppendEntriesRequest {
                vote: self.vote,
                prev_log_id: self.prev_log_id,
                entries,
                leader_commit: self.leader_commit,
            },
            texts,
        ))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;

    use op_proto::node::LoadInfo;
    use op_proto::{RunStatus, Trigger};
    use openraft::{CommittedLeaderId, Membership};

    use super::*;
    use crate::raft::types::Member;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + s, 123_456_789).unwrap()
    }

    fn run(i: u32, node_id: Uuid) -> RunRecord {
        let full = i % 2 == 1;
        RunRecord {
            run_id: Uuid::from_u128(0x1000 + u128::from(i)),
            job: format!("job-{i} \"quoted\" \\ é ✓"),
            job_revision: u64::from(i) + 1,
            node_id,
            hostname: format!("host-{i}"),
            ips: if full {
                vec!["10.0.0.1".parse().unwrap(), "::1".parse().unwrap()]
            } else {
                vec![]
            },
            trigger: if full { Trigger::Cron } else { Trigger::Adhoc },
            attempt: i,
            invocation_id: full.then(|| Uuid::from_u128(7)),
            params: if full {
                BTreeMap::from([("k".to_string(), "v\n\t\u{1}".to_string())])
            } else {
                BTreeMap::new()
            },
            command: "echo \"hi\"\n".into(),
            planned_at: full.then(|| at(1)),
            started_at: Some(at(2)),
            ended_at: full.then(|| at(3)),
            status: if full {
                RunStatus::Failed
            } else {
                RunStatus::Ok
            },
            exit_code: full.then_some(-3),
            signal: full.then_some(9),
            error: full.then(|| "boom\r\n".to_string()),
            output: "line 1\nline 2 \u{7f} 🦀\n".into(),
            output_truncated: full,
            output_bytes: u64::MAX,
            stderr_tail: if full { "err\n".into() } else { String::new() },
            rusage: None,
            notes: if full { vec!["a note".into()] } else { vec![] },
        }
    }

    fn entry(index: u64, payload: EntryPayload<TypeConfig>) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(4, 2), index),
            payload,
        }
    }

    /// Entries of every shape: the commands decoded here (empty and full), others, and entries
    /// without a command.
    pub(crate) fn entries() -> Vec<Entry> {
        let node = Uuid::from_u128(42);
        let commands = vec![
            Command::IngestRunBatches {
                at: at(0),
                batches: vec![
                    NodeRuns {
                        node_id: node,
                        runs: (0..6).map(|i| run(i, node)).collect(),
                    },
                    NodeRuns {
                        node_id: Uuid::from_u128(43),
                        runs: vec![],
                    },
                ],
            },
            Command::IngestRunBatches {
                at: at(5),
                batches: vec![],
            },
            Command::IngestRuns {
                node_id: node,
                at: at(6),
                runs: (0..3).map(|i| run(i, node)).collect(),
            },
            Command::Heartbeats {
                beats: vec![
                    NodeBeat {
                        node_id: node,
                        seen_at: at(7),
                        agent_version: "1.2.3".into(),
                        load: Some(LoadInfo::default()),
                        running: vec![],
                        packages: vec![],
                        stats: Default::default(),
                        degraded: Some("disk full".into()),
                        clock_skew_ms: Some(-12),
                    },
                    NodeBeat {
                        node_id: Uuid::from_u128(44),
                        seen_at: at(8),
                        agent_version: String::new(),
                        load: None,
                        running: vec![],
                        packages: vec![],
                        stats: Default::default(),
                        degraded: None,
                        clock_skew_ms: None,
                    },
                ],
            },
            Command::FlushEvents { at: at(9) },
            Command::DeleteJob {
                name: "j".into(),
                at: at(10),
                actor: "admin".into(),
            },
        ];
        let mut out: Vec<Entry> = commands
            .into_iter()
            .enumerate()
            .map(|(i, c)| entry(i as u64 + 1, EntryPayload::Normal(c)))
            .collect();
        out.push(entry(20, EntryPayload::Blank));
        let membership: Membership<u64, Member> = Membership::new(
            vec![[1u64, 2].into_iter().collect()],
            [
                (1, Member::default()),
                (
                    2,
                    Member {
                        api_addr: "http://a".into(),
                        raft_addr: "http://r".into(),
                    },
                ),
            ]
            .into_iter()
            .collect::<BTreeMap<_, _>>(),
        );
        out.push(entry(21, EntryPayload::Membership(membership)));
        out
    }

    fn hot(entry: &Entry) -> bool {
        matches!(
            &entry.payload,
            EntryPayload::Normal(
                Command::IngestRunBatches { .. }
                    | Command::IngestRuns { .. }
                    | Command::Heartbeats { .. }
            )
        )
    }

    /// An entry written by the old code (serde's encoder) decodes to what serde's derived
    /// decoder gives, through the direct path for the run and heartbeat commands.
    #[test]
    fn entries_decode_as_the_derived_decoder_decodes_them() {
        for e in entries() {
            let text = serde_json::to_string(&e).unwrap();
            let derived: Entry = serde_json::from_str(&text).unwrap();
            assert_eq!(derived, e, "{text}");
            assert_eq!(decode_entry(&text).unwrap(), derived, "{text}");
            assert_eq!(
                decode_fast(&text).is_some(),
                hot(&e),
                "the direct path for the run and heartbeat commands only: {text}"
            );
        }
    }

    /// JSON the encoder never writes (the tag elsewhere, twice, fields missing or of the wrong
    /// type, unknown fields) decodes, or fails, exactly as with the derived decoder.
    #[test]
    fn unusual_json_decodes_or_fails_as_with_the_derived_decoder() {
        let log_id = r#"{"leader_id":{"term":4,"node_id":2},"index":9}"#;
        let at = r#""2023-11-14T22:13:20Z""#;
        let run = serde_json::to_string(&run(1, Uuid::from_u128(1))).unwrap();
        let commands = [
            format!(r#"{{"at":{at},"type":"ingest_run_batches","batches":[]}}"#),
            format!(r#"{{"type":"ingest_run_batches","at":{at},"batches":[],"type":"x"}}"#),
            format!(
                r#"{{"type":"ingest_run_batches","at":{at},"batches":[],"type":"ingest_run_batches"}}"#
            ),
            r#"{"type":"ingest_run_batches","batches":[]}"#.to_string(),
            format!(r#"{{"type":"ingest_run_batches","at":{at},"batches":{{}}}}"#),
            format!(r#"{{"type":"ingest_run_batches","at":{at},"at":{at},"batches":[]}}"#),
            format!(
                r#"{{"type":"ingest_run_batches","at":{at},"batches":[],"later":[1,{{"a":2}}]}}"#
            ),
            format!(
                r#"{{"type":"ingest_runs","node_id":"00000000-0000-0000-0000-000000000001","at":{at},"runs":[{run}]}}"#
            ),
            format!(r#"{{"type":"ingest_runs","node_id":"not a uuid","at":{at},"runs":[]}}"#),
            format!(
                r#"{{"type":"ingest_runs","node_id":"00000000-0000-0000-0000-000000000001","at":{at},"runs":[{{}}]}}"#
            ),
            r#"{"type":"heartbeats","beats":[]}"#.to_string(),
            r#"{"type":"heartbeats"}"#.to_string(),
            r#"{"type":"heart\u0062eats","beats":[]}"#.to_string(),
            r#"{"\u0074ype":"heartbeats","beats":[]}"#.to_string(),
            r#"{"type":"no_such_command"}"#.to_string(),
            r#"{"type":7,"beats":[]}"#.to_string(),
            r#"{}"#.to_string(),
            r#"[]"#.to_string(),
        ];
        let mut ok = 0;
        for command in &commands {
            let text = format!(r#"{{"log_id":{log_id},"payload":{{"Normal":{command}}}}}"#);
            let derived = serde_json::from_str::<Entry>(&text);
            match (decode_entry(&text), derived) {
                (Ok(got), Ok(want)) => {
                    assert_eq!(got, want, "{text}");
                    ok += 1;
                }
                (Err(got), Err(want)) => assert_eq!(got.to_string(), want.to_string(), "{text}"),
                (got, want) => panic!("{text}: {got:?} but derived {want:?}"),
            }
        }
        assert!(ok >= 6, "only {ok} decoded");
    }

    /// A forwarded write decodes as the derived decoder decodes it, whatever its command.
    #[test]
    fn a_forwarded_write_decodes_as_the_derived_decoder_decodes_it() {
        for e in entries() {
            let EntryPayload::Normal(command) = e.payload else {
                continue;
            };
            let body = serde_json::to_vec(&WriteRequest { command }).unwrap();
            let want: WriteRequest = serde_json::from_slice(&body).unwrap();
            assert_eq!(decode_write(&body).unwrap(), want);
        }
        for bad in [&b"{}"[..], br#"{"command":{"type":"heartbeats"}}"#, b"[1"] {
            assert_eq!(
                decode_write(bad).unwrap_err().to_string(),
                serde_json::from_slice::<WriteRequest>(bad)
                    .unwrap_err()
                    .to_string()
            );
        }
    }
}
