//! The second opinion for what the walk could not prove: jsonschema's (experimental) canonical
//! form, whose `subtract` computes the instances one schema accepts and the other rejects. When
//! that set is provably empty the suspected break is not one. It is only ever used to clear an
//! `unknown`, never to claim a break, and it runs on its own thread with a time limit so that a
//! slow or failing canonicalisation leaves the finding `unknown`.

use std::sync::mpsc;
use std::time::Duration;

use jsonschema::canonical::Satisfiability;
use serde_json::Value;

/// True when every instance `accepting` accepts is accepted by `rejecting`, as proven by the
/// canonical subtraction; false when that is disproven, undecided, unsupported or too slow.
pub(crate) fn proves_no_break(accepting: &Value, rejecting: &Value, time_limit: Duration) -> bool {
    let (accepting, rejecting) = (accepting.clone(), rejecting.clone());
    let (sender, receiver) = mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("schema-diff-canonical".into())
        .spawn(move || {
            let _ = sender.send(subtraction_is_empty(&accepting, &rejecting));
        });
    if spawned.is_err() {
        return false;
    }
    // A panic inside the experimental canonicaliser drops the sender: `recv` then fails.
    receiver.recv_timeout(time_limit).unwrap_or(false)
}

fn subtraction_is_empty(accepting: &Value, rejecting: &Value) -> bool {
    let canonicalize = |doc: &Value| {
        jsonschema::canonical::options()
            .should_validate_formats(true)
            .canonicalize(doc)
    };
    let (Ok(accepting), Ok(rejecting)) = (canonicalize(accepting), canonicalize(rejecting)) else {
        return false;
    };
    matches!(
        accepting
            .subtract(&rejecting)
            .map(|difference| difference.satisfiability()),
        Ok(Satisfiability::No)
    )
}
