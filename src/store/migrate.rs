//! Migrations of stored records from older schema versions to `SCHEMA_VERSION`: plain functions
//! on JSON values that add what an older launcher did not write, and the one sled transaction
//! that applies them when the store is opened; version 1 goes to 2 that way, 2 to 3 and 3 to 4
//! by recording the version alone (a version-2 record is a version-3 record, and a version-3
//! record a version-4 record), 4 to 5 by moving each id's history (one JSON list under its id)
//! into one record per event (`super::history`), keeping the events.
//!
//! A migration never overwrites a field that is present, and never writes back a record that
//! does not decode as the current type afterwards: such a record is left as it was, so that the
//! scans report it as corrupt exactly as they did before the migration.

use std::convert::Infallible;

use serde::de::DeserializeOwned;
use serde_json::{json, Map, Value};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::{IVec, Transactional};

use std::path::Path;

use super::history::history_key;
use super::{encode, io, StoreError, Trees, SCHEMA_VERSION, SCHEMA_VERSION_KEY};
use crate::reconcile::{DesiredRecord, LifeEvent, ObservedRecord, MAX_LIFE_EVENTS};

/// The version `from_v1` produces. It is not `SCHEMA_VERSION` itself, because when the schema
/// moves on, the migration from version 2 is chained after this one, and this one must keep
/// producing exactly the version-2 shape.
const V2: u32 = 2;

/// The version `from_v2` produces.
const V3: u32 = 3;

/// The version `from_v3` produces.
const V4: u32 = 4;

/// The version `from_v4` produces.
const V5: u32 = 5;

// This file migrates up to version 5 only: a later `SCHEMA_VERSION` needs a migration from
// version 5 chained after `from_v4` (and `Trees::migrate_from` taught to run it).
const _: () = assert!(
    V5 == SCHEMA_VERSION,
    "chain a migration from version 5 to SCHEMA_VERSION"
);

/// The fields a `ProcessSpec` of version 1 may lack (they were added with serde defaults), with
/// the value an old spec meant: no extra success codes, the launcher's own backoff, no type
/// configuration.
fn spec_defaults() -> [(&'static str, Value); 3] {
    [
        ("success_exit_codes", json!([])),
        (
            "backoff",
            json!({"initial": null, "max": null, "reset_after": null, "failure_threshold": null}),
        ),
        // `TypeConfig` is externally tagged: its unit variant `None` is the bare string.
        ("type_config", json!("None")),
    ]
}

/// The fields of its own a `DesiredRecord` of version 1 may lack: never reset.
fn desired_defaults() -> [(&'static str, Value); 1] {
    [("resets", json!(0))]
}

/// The fields of its own an `ObservedRecord` of version 1 may lack: started before instance ids
/// existed, no reset acted on, never tripped, no exit time known.
fn observed_defaults() -> [(&'static str, Value); 4] {
    [
        ("instance", Value::Null),
        ("resets_seen", json!(0)),
        ("tripped_at", Value::Null),
        ("exited_at", Value::Null),
    ]
}

/// Inserts each default whose key `object` lacks; a present field is never touched, whatever
/// its value. Returns whether anything was inserted.
fn insert_missing<const N: usize>(
    object: &mut Map<String, Value>,
    defaults: [(&'static str, Value); N],
) -> bool {
    let mut inserted = false;
    for (key, default) in defaults {
        if !object.contains_key(key) {
            object.insert(key.to_string(), default);
            inserted = true;
        }
    }
    inserted
}

/// Gives the `spec` of a version-1 record the fields version 2 requires. A record without a
/// `spec` object is left for the decode check to refuse.
fn spec_v1_to_v2(record: &mut Map<String, Value>) -> bool {
    match record.get_mut("spec").and_then(Value::as_object_mut) {
        Some(spec) => insert_missing(spec, spec_defaults()),
        None => false,
    }
}

/// Gives a version-1 desired record the fields version 2 requires. Returns whether it added
/// any. A value that is not an object is left alone (it is no record of any version).
pub(super) fn desired_v1_to_v2(record: &mut Value) -> bool {
    let Some(object) = record.as_object_mut() else {
        return false;
    };
    let spec = spec_v1_to_v2(object);
    let own = insert_missing(object, desired_defaults());
    spec || own
}

/// Gives a version-1 observed record the fields version 2 requires; see `desired_v1_to_v2`.
pub(super) fn observed_v1_to_v2(record: &mut Value) -> bool {
    let Some(object) = record.as_object_mut() else {
        return false;
    };
    let spec = spec_v1_to_v2(object);
    let own = insert_missing(object, observed_defaults());
    spec || own
}

/// What migrating one stored record comes to.
#[derive(Debug)]
pub(super) enum Upgrade {
    /// Fields were added and the result decodes as the current type: write it back.
    Rewrite(Value),
    /// It decodes as the current type as it is: nothing to write.
    Current,
    /// It is not JSON, or does not decode even with the added fields: leave it as it is.
    Undecodable(serde_json::Error),
}

/// Migrates the stored bytes of one record with `add_defaults` and checks the result by decoding
/// it as `T`, the current type of the record.
pub(super) fn upgrade<T: DeserializeOwned>(
    bytes: &[u8],
    add_defaults: fn(&mut Value) -> bool,
) -> Upgrade {
    let mut value: Value = match serde_json::from_slice(bytes) {
        Ok(value) => value,
        Err(error) => return Upgrade::Undecodable(error),
    };
    let added = add_defaults(&mut value);
    match T::deserialize(&value) {
        Ok(_) if added => Upgrade::Rewrite(value),
        Ok(_) => Upgrade::Current,
        Err(error) => Upgrade::Undecodable(error),
    }
}

/// What a migration did to the records, for its log line.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Counts {
    /// Given the missing fields and written back.
    rewritten: usize,
    /// Already complete (a late version-1 launcher wrote every field): left as they were.
    current: usize,
    /// Not decodable even with the missing fields: left as they were, reported as corrupt.
    undecodable: usize,
}

/// Migrates a store of schema version 1 to version 2: every record of `desired` and `observed`
/// gets the fields it lacks, and the records and the new version are written in one transaction,
/// so that a crash leaves either the version-1 store or the version-2 store; then flushed.
///
/// Runs when the store's trees are opened, before anyone can read them (in `Store::open`; an
/// open again by `Store::release_memory` finds the current version), so nothing else reads or
/// writes the trees meanwhile (the store's own lock and sled's keep other launchers out).
pub(super) fn from_v1(store: &Trees, path: &Path) -> Result<(), StoreError> {
    let mut counts = Counts::default();
    let desired = migrated_records::<DesiredRecord>(
        &store.desired,
        "desired",
        desired_v1_to_v2,
        &mut counts,
    )?;
    let observed = migrated_records::<ObservedRecord>(
        &store.observed,
        "observed",
        observed_v1_to_v2,
        &mut counts,
    )?;
    let version = V2.to_string();
    (&store.desired, &store.observed, &store.meta)
        .transaction(|(desired_tx, observed_tx, meta_tx)| {
            for (key, bytes) in &desired {
                desired_tx.insert(key, bytes.as_slice())?;
            }
            for (key, bytes) in &observed {
                observed_tx.insert(key, bytes.as_slice())?;
            }
            meta_tx.insert(SCHEMA_VERSION_KEY, version.as_bytes())?;
            Ok::<(), ConflictableTransactionError<Infallible>>(())
        })
        .map_err(|error| match error {
            TransactionError::Abort(never) => match never {},
            TransactionError::Storage(source) => io(
                format!("migrating the store from schema version 1 to {V2}"),
                source,
            ),
        })?;
    store.flush()?;
    tracing::info!(
        path = %path.display(),
        rewritten = counts.rewritten,
        already_complete = counts.current,
        undecodable = counts.undecodable,
        "migrated {} records of the store from schema version 1 to {V2}",
        counts.rewritten
    );
    Ok(())
}

/// Migrates a store of schema version 2 to version 3. Version 3 only leaves fields that hold
/// their default out of the records it writes and reads them back as absent-means-default, so a
/// version-2 record (every field present) decodes as it is: the records stay, and are written in
/// the new shape the next time they change. Only the version is recorded, then flushed.
pub(super) fn from_v2(store: &Trees, path: &Path) -> Result<(), StoreError> {
    store
        .meta
        .insert(SCHEMA_VERSION_KEY, V3.to_string().as_bytes())
        .map_err(|source| io(format!("recording schema version {V3}"), source))?;
    store.flush()?;
    tracing::info!(
        path = %path.display(),
        "the store moved from schema version 2 to {V3}; its records are read as they are"
    );
    Ok(())
}

/// Migrates a store of schema version 3 to version 4. Version 4's new fields (`held`,
/// `restarts`, `restarts_seen`) are left out at their default, which is what a version-3
/// record means (never held, no restart asked for or acted on), and its new trees start empty;
/// so every version-3 record is read as it is, and only the version is recorded, then flushed.
/// The version moves all the same so that a version-3 launcher, which would start a held
/// process, refuses the store instead.
pub(super) fn from_v3(store: &Trees, path: &Path) -> Result<(), StoreError> {
    store
        .meta
        .insert(SCHEMA_VERSION_KEY, V4.to_string().as_bytes())
        .map_err(|source| io(format!("recording schema version {V4}"), source))?;
    store.flush()?;
    tracing::info!(
        path = %path.display(),
        "the store moved from schema version 3 to {V4}; its records are read as they are"
    );
    Ok(())
}

/// Migrates a store of schema version 4 to version 5: each history, a JSON list of events
/// under its id, becomes one record per event under `<id> NUL <seq>` (its last
/// `MAX_LIFE_EVENTS`, numbered from 0, oldest first), in ONE batch of the history tree that
/// also removes the lists; then the version is recorded. A crash before the version is written
/// leaves a version-4 store whose histories are in the new shape, or not at all, so the next
/// open runs this again and finds only the ones left to move (a key of the new shape holds a
/// NUL, which no id does). A list that does not decode is dropped, with a log line: a history
/// is what `describe` tells, never what the loop decides by.
pub(super) fn from_v4(store: &Trees, path: &Path) -> Result<(), StoreError> {
    let mut batch = sled::Batch::default();
    let (mut moved, mut events, mut dropped) = (0usize, 0usize, 0usize);
    for entry in store.history.iter() {
        let (key, bytes) = entry.map_err(|source| {
            io(
                format!("reading the history tree to migrate it to schema version {V5}"),
                source,
            )
        })?;
        if key.contains(&0) {
            continue;
        }
        batch.remove(key.clone());
        let key_text = String::from_utf8_lossy(&key).into_owned();
        match serde_json::from_slice::<Vec<LifeEvent>>(&bytes) {
            Ok(history) => {
                let kept = history.len().saturating_sub(MAX_LIFE_EVENTS);
                for (seq, event) in (0u64..).zip(&history[kept..]) {
                    let new_key = history_key(&key, seq);
                    batch.insert(new_key, encode("history", &key_text, event)?);
                    events += 1;
                }
                moved += 1;
            }
            Err(error) => {
                tracing::warn!(
                    key = %key_text,
                    %error,
                    "a version-4 history does not decode; it is dropped (describe shows no \
                     events before this launcher's)"
                );
                dropped += 1;
            }
        }
    }
    store.history.apply_batch(batch).map_err(|source| {
        io(
            format!("moving {moved} histories to the shape of schema version {V5}"),
            source,
        )
    })?;
    store.flush()?;
    store
        .meta
        .insert(SCHEMA_VERSION_KEY, V5.to_string().as_bytes())
        .map_err(|source| io(format!("recording schema version {V5}"), source))?;
    store.flush()?;
    tracing::info!(
        path = %path.display(),
        histories = moved,
        events,
        dropped,
        "the store moved from schema version 4 to {V5}: one record per event of a history"
    );
    Ok(())
}

/// The records of `tree` that `add_defaults` completed, encoded, by key. Records that do not
/// decode even so are logged and left out, so they stay as they are.
fn migrated_records<T: DeserializeOwned>(
    tree: &sled::Tree,
    name: &'static str,
    add_defaults: fn(&mut Value) -> bool,
    counts: &mut Counts,
) -> Result<Vec<(IVec, Vec<u8>)>, StoreError> {
    let mut writes = Vec::new();
    for entry in tree.iter() {
        let (key, bytes) =
            entry.map_err(|source| io(format!("reading the {name} tree to migrate it"), source))?;
        let key_text = String::from_utf8_lossy(&key);
        match upgrade::<T>(&bytes, add_defaults) {
            Upgrade::Rewrite(value) => {
                writes.push((key.clone(), encode(name, &key_text, &value)?));
                counts.rewritten += 1;
            }
            Upgrade::Current => counts.current += 1,
            Upgrade::Undecodable(error) => {
                tracing::warn!(
                    tree = name,
                    key = %key_text,
                    %error,
                    "a record of schema version 1 does not decode even with the fields of \
                     version {V2}; it is left as it is and reported as corrupt"
                );
                counts.undecodable += 1;
            }
        }
    }
    Ok(writes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::{BackoffOverrides, ProcessSpec, TypeConfig};

    /// A spec as a version-1 launcher from before the eight fields wrote it.
    fn v1_spec() -> Value {
        json!({
            "process_type": "Pattern",
            "executable": "/usr/bin/memstore",
            "args": ["--listen", "127.0.0.1"],
            "env": {"RUST_LOG": "debug"},
            "inherit_env": ["PATH"],
            "working_dir": null,
            "pattern": "memstore",
            "isolation": "None",
            "namespace": null,
            "session_id": null,
            "health_check": null,
            "restart_policy": "OnFailure",
            "termination_grace": {"secs": 10, "nanos": 0},
            "resources": null,
            "requested_ports": {"grpc": null, "health": 9090},
            "labels": {"team": "data"}
        })
    }

    fn v1_desired() -> Value {
        json!({
            "id": "alpha",
            "spec": v1_spec(),
            "generation": 3,
            "source": {"File": {"path": "/specs/a.yaml"}}
        })
    }

    fn v1_observed() -> Value {
        json!({
            "id": "alpha",
            "phase": "Running",
            "pid": 4242,
            "pid_start_ticks": 123456,
            "generation": 3,
            "spec": v1_spec(),
            "ports": {"grpc": 50051, "health": 9090},
            "started_at": 1700000000000u64,
            "health": "Healthy",
            "probe_successes": 1,
            "probe_failures": 0,
            "restart_count": 2,
            "consecutive_failures": 0,
            "error_count": 1,
            "last_exit": {"Code": 1},
            "last_error": null,
            "next_restart_at": null,
            "stop_reason": null,
            "stop_deadline": null,
            "killed": false
        })
    }

    fn v2_spec() -> Value {
        let mut spec = v1_spec();
        let object = spec.as_object_mut().expect("the fixture spec is an object");
        object.insert("success_exit_codes".to_string(), json!([]));
        object.insert(
            "backoff".to_string(),
            json!({"initial": null, "max": null, "reset_after": null, "failure_threshold": null}),
        );
        object.insert("type_config".to_string(), json!("None"));
        spec
    }

    #[test]
    fn a_version_1_desired_record_gets_the_version_2_fields() {
        let mut record = v1_desired();

        assert!(desired_v1_to_v2(&mut record));

        let mut expected = v1_desired();
        expected["spec"] = v2_spec();
        expected["resets"] = json!(0);
        assert_eq!(record, expected);
        let decoded: DesiredRecord = serde_json::from_value(record).expect("decodes as v2");
        assert_eq!(decoded.resets, 0);
        assert_eq!(decoded.spec.success_exit_codes, Vec::<i32>::new());
        assert_eq!(decoded.spec.backoff, BackoffOverrides::default());
        assert_eq!(decoded.spec.type_config, TypeConfig::None);
    }

    #[test]
    fn a_version_1_observed_record_gets_the_version_2_fields() {
        let mut record = v1_observed();

        assert!(observed_v1_to_v2(&mut record));

        let mut expected = v1_observed();
        expected["spec"] = v2_spec();
        expected["instance"] = Value::Null;
        expected["resets_seen"] = json!(0);
        expected["tripped_at"] = Value::Null;
        expected["exited_at"] = Value::Null;
        assert_eq!(record, expected);
        let decoded: ObservedRecord = serde_json::from_value(record).expect("decodes as v2");
        assert_eq!(decoded.instance, None);
        assert_eq!(decoded.resets_seen, 0);
        assert_eq!(decoded.tripped_at, None);
        assert_eq!(decoded.exited_at, None);
    }

    #[test]
    fn the_defaults_are_what_the_current_types_default_to() {
        let spec: Map<String, Value> = spec_defaults()
            .into_iter()
            .map(|(key, value)| (key.to_string(), value))
            .collect();
        let codes: Vec<i32> = serde_json::from_value(spec["success_exit_codes"].clone()).unwrap();
        let backoff: BackoffOverrides = serde_json::from_value(spec["backoff"].clone()).unwrap();
        let type_config: TypeConfig = serde_json::from_value(spec["type_config"].clone()).unwrap();
        assert_eq!(codes, Vec::<i32>::new());
        assert_eq!(backoff, BackoffOverrides::default());
        assert_eq!(type_config, TypeConfig::default());
        // And they are spelled as the current types write them.
        assert_eq!(
            serde_json::to_value(BackoffOverrides::default()).unwrap(),
            spec["backoff"]
        );
        assert_eq!(
            serde_json::to_value(TypeConfig::default()).unwrap(),
            spec["type_config"]
        );
    }

    #[test]
    fn present_fields_are_never_overwritten() {
        let mut record = v1_desired();
        record["resets"] = json!(4);
        record["spec"]["success_exit_codes"] = json!([0, 3]);
        record["spec"]["backoff"] = json!({"initial": {"secs": 2, "nanos": 0}});
        record["spec"]["type_config"] = json!({"Utility": {}});
        let before = record.clone();

        // Nothing is missing, so nothing changes, whatever the values are.
        assert!(!desired_v1_to_v2(&mut record));
        assert_eq!(record, before);

        let mut observed = v1_observed();
        observed["instance"] = json!("i-1");
        observed["resets_seen"] = json!(2);
        observed["tripped_at"] = json!(1700000000001u64);
        // Only the missing one is added.
        assert!(observed_v1_to_v2(&mut observed));
        assert_eq!(observed["instance"], json!("i-1"));
        assert_eq!(observed["resets_seen"], json!(2));
        assert_eq!(observed["tripped_at"], json!(1700000000001u64));
        assert_eq!(observed["exited_at"], Value::Null);
    }

    #[test]
    fn values_that_are_not_records_are_left_alone() {
        for mut value in [json!(null), json!([1, 2]), json!("alpha"), json!(7)] {
            let before = value.clone();
            assert!(!desired_v1_to_v2(&mut value));
            assert!(!observed_v1_to_v2(&mut value));
            assert_eq!(value, before);
        }
        // A record without a spec object gets its own fields only.
        let mut record = json!({"id": "alpha", "spec": "not a spec"});
        assert!(desired_v1_to_v2(&mut record));
        assert_eq!(
            record,
            json!({"id": "alpha", "spec": "not a spec", "resets": 0})
        );
    }

    #[test]
    fn upgrade_rewrites_an_old_record_and_leaves_a_complete_one() {
        let old = serde_json::to_vec(&v1_desired()).unwrap();
        match upgrade::<DesiredRecord>(&old, desired_v1_to_v2) {
            Upgrade::Rewrite(value) => assert_eq!(value["resets"], json!(0)),
            other => panic!("expected Rewrite, got {other:?}"),
        }

        let mut complete = v1_desired();
        desired_v1_to_v2(&mut complete);
        let complete = serde_json::to_vec(&complete).unwrap();
        assert!(matches!(
            upgrade::<DesiredRecord>(&complete, desired_v1_to_v2),
            Upgrade::Current
        ));
    }

    #[test]
    fn upgrade_reports_records_that_still_do_not_decode() {
        // Not JSON at all.
        assert!(matches!(
            upgrade::<DesiredRecord>(b"\x00\xffnot json{", desired_v1_to_v2),
            Upgrade::Undecodable(_)
        ));
        // JSON, but missing a field that was never optional.
        let mut no_generation = v1_desired();
        no_generation
            .as_object_mut()
            .expect("the fixture is an object")
            .remove("generation");
        let bytes = serde_json::to_vec(&no_generation).unwrap();
        assert!(matches!(
            upgrade::<DesiredRecord>(&bytes, desired_v1_to_v2),
            Upgrade::Undecodable(_)
        ));
        // A desired record is not an observed one.
        let bytes = serde_json::to_vec(&v1_desired()).unwrap();
        assert!(matches!(
            upgrade::<ObservedRecord>(&bytes, observed_v1_to_v2),
            Upgrade::Undecodable(_)
        ));
    }

    #[test]
    fn a_v1_spec_with_the_fields_decodes_as_a_process_spec() {
        let spec: ProcessSpec = serde_json::from_value(v2_spec()).expect("a v2 spec");
        assert_eq!(spec.labels["team"], "data");
        // Version 3 reads the absent fields as their defaults, which are what a version-1
        // launcher meant by leaving them out.
        let without: ProcessSpec = serde_json::from_value(v1_spec()).expect("a v1 spec");
        assert_eq!(without, spec);
    }
}
