//! Packages from peers (issue 26), agent side: checking a chunk ticket another node presents.
//!
//! An agent cannot check other nodes' credentials, so a node that wants chunks from it presents a
//! ticket its manager signed (`op_proto::chunks::Ticket`: node, package, version, expiry of
//! minutes). It is checked here with the fleet's ticket public key (ed25519, hex): the signature,
//! the expiry, and that it names the version asked for. A forgotten node gets no new tickets from
//! any manager, and the ones it holds expire.

use op_proto::chunks::{Ticket, TicketError};
use ring::signature::{ED25519, UnparsedPublicKey};

/// The ticket in `encoded` if it is signed by `public_key_hex`, unexpired at `now` (unix
/// seconds) and for `package` `version`.
pub fn verify_ticket(
    public_key_hex: &str,
    encoded: &str,
    package: &str,
    version: u64,
    now: i64,
) -> Result<Ticket, TicketError> {
    let (ticket, sig) = Ticket::decode(encoded)?;
    let key = hex::decode(public_key_hex.trim()).map_err(|_| TicketError::BadSignature)?;
    UnparsedPublicKey::new(&ED25519, &key)
        .verify(&ticket.signed_bytes(), &sig)
        .map_err(|_| TicketError::BadSignature)?;
    ticket.check(package, version, now)?;
    Ok(ticket)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{Ed25519KeyPair, KeyPair};

    fn pair(seed: u8) -> Ed25519KeyPair {
        Ed25519KeyPair::from_seed_unchecked(&[seed; 32]).unwrap()
    }

    #[test]
    fn only_a_fresh_ticket_of_the_fleet_key_for_this_version_passes() {
        let fleet = pair(1);
        let pk = hex::encode(fleet.public_key().as_ref());
        let t = Ticket {
            node: uuid::Uuid::new_v4(),
            package: "tool".into(),
            version: 4,
            expires: 2000,
        };
        let good = t.encode(fleet.sign(&t.signed_bytes()).as_ref());
        assert_eq!(verify_ticket(&pk, &good, "tool", 4, 1999).unwrap(), t);
        assert_eq!(
            verify_ticket(&pk, &good, "tool", 4, 2000),
            Err(TicketError::Expired)
        );
        assert!(matches!(
            verify_ticket(&pk, &good, "tool", 5, 1),
            Err(TicketError::OtherVersion { .. })
        ));
        // Signed by another key.
        let forged = t.encode(pair(2).sign(&t.signed_bytes()).as_ref());
        assert_eq!(
            verify_ticket(&pk, &forged, "tool", 4, 1),
            Err(TicketError::BadSignature)
        );
        // A real signature with the ticket changed after signing (a later expiry).
        let (_, sig) = Ticket::decode(&good).unwrap();
        let longer = Ticket {
            expires: 9_999_999,
            ..t.clone()
        };
        assert_eq!(
            verify_ticket(&pk, &longer.encode(&sig), "tool", 4, 3000),
            Err(TicketError::BadSignature)
        );
        assert_eq!(
            verify_ticket(&pk, "garbage", "tool", 4, 1),
            Err(TicketError::Malformed)
        );
    }
}
