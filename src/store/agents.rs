//! The agent gateway's agents (`callbridge ctl agents ...` manages them): their ids, argon2id
//! password hashes and inspector flags.
//!
//! Owns: the agents table's rows.
//! Must not: keep or log a password, or decide who is signed in (the gateway's sessions do).

use super::db::Db;
use super::model::UnixMs;
use super::sql::{args, Sql};
use super::users::{hash_password, StoredPassword};
use super::StoreError;

/// Agent ids, as the vendor's range (101 to 999999).
const AGENT_IDS: std::ops::RangeInclusive<i64> = 101..=999_999;

/// An agent as listed (never with the hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentRecord {
    pub agent_id: u32,
    /// May query every conference (`queryvdnconfid`).
    pub inspector: bool,
    pub created_ms: UnixMs,
}

impl Db {
    /// Adds an agent; refuses an id outside 101..=999999, an empty password, or an id taken.
    pub fn add_agent(
        &mut self,
        agent_id: i64,
        password: &str,
        inspector: bool,
        now_ms: UnixMs,
    ) -> Result<(), StoreError> {
        let id = check_id(agent_id)?;
        let hash = hash_password(password)?;
        let tx = self.sql.transaction()?;
        if agent_hash(&tx, id)?.is_some() {
            return Err(StoreError::AgentExists(id));
        }
        tx.execute(
            "INSERT INTO agents (agent_id, password_hash, inspector, created_ms)
             VALUES (?1, ?2, ?3, ?4)",
            args![id, hash, inspector, now_ms],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Removes an agent.
    pub fn remove_agent(&mut self, agent_id: i64) -> Result<(), StoreError> {
        let id = check_id(agent_id)?;
        let removed = self
            .sql
            .execute("DELETE FROM agents WHERE agent_id = ?1", args![id])?;
        if removed == 0 {
            return Err(StoreError::UnknownAgent(id));
        }
        Ok(())
    }

    /// Sets an agent's password.
    pub fn set_agent_password(&mut self, agent_id: i64, password: &str) -> Result<(), StoreError> {
        let id = check_id(agent_id)?;
        let hash = hash_password(password)?;
        let changed = self.sql.execute(
            "UPDATE agents SET password_hash = ?2 WHERE agent_id = ?1",
            args![id, hash],
        )?;
        if changed == 0 {
            return Err(StoreError::UnknownAgent(id));
        }
        Ok(())
    }

    /// The agents, by id.
    pub fn list_agents(&self) -> Result<Vec<AgentRecord>, StoreError> {
        self.sql
            .query(
                "SELECT agent_id, inspector, created_ms FROM agents ORDER BY agent_id",
                args![],
            )?
            .iter()
            .map(|row| {
                Ok(AgentRecord {
                    agent_id: row.get(0)?,
                    inspector: row.get(1)?,
                    created_ms: row.get(2)?,
                })
            })
            .collect()
    }

    /// The agent's stored hash and inspector flag, to check a password with
    /// [`StoredPassword::check`] away from the store thread; None for an unknown agent (check
    /// against None all the same: it takes as long).
    pub fn agent_credentials(
        &self,
        agent_id: u32,
    ) -> Result<Option<(StoredPassword, bool)>, StoreError> {
        self.sql
            .query_opt(
                "SELECT password_hash, inspector FROM agents WHERE agent_id = ?1",
                args![agent_id],
            )?
            .map(|row| Ok((StoredPassword(row.get(0)?), row.get(1)?)))
            .transpose()
    }
}

fn agent_hash(conn: &Sql, id: u32) -> Result<Option<String>, StoreError> {
    conn.query_opt(
        "SELECT password_hash FROM agents WHERE agent_id = ?1",
        args![id],
    )?
    .map(|row| row.get(0))
    .transpose()
}

fn check_id(agent_id: i64) -> Result<u32, StoreError> {
    if !AGENT_IDS.contains(&agent_id) {
        return Err(StoreError::InvalidAgentId(agent_id));
    }
    u32::try_from(agent_id).map_err(|_| StoreError::InvalidAgentId(agent_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> (tempfile::TempDir, Db) {
        crate::store::testing::temp_db()
    }

    #[test]
    fn agents_are_added_checked_listed_changed_and_removed() {
        let (_dir, mut db) = db();
        db.add_agent(1001, "pw-1", false, 10).unwrap();
        db.add_agent(2002, "pw-2", true, 20).unwrap();
        assert!(matches!(
            db.add_agent(1001, "again", false, 30),
            Err(StoreError::AgentExists(1001))
        ));
        for bad in [100, 1_000_000, -5] {
            assert!(matches!(
                db.add_agent(bad, "x", false, 0),
                Err(StoreError::InvalidAgentId(_))
            ));
        }
        assert!(matches!(
            db.add_agent(3003, "", false, 0),
            Err(StoreError::EmptyPassword)
        ));
        assert_eq!(
            db.list_agents().unwrap(),
            [
                AgentRecord {
                    agent_id: 1001,
                    inspector: false,
                    created_ms: 10
                },
                AgentRecord {
                    agent_id: 2002,
                    inspector: true,
                    created_ms: 20
                },
            ]
        );
        let (stored, inspector) = db.agent_credentials(2002).unwrap().expect("known");
        assert!(inspector);
        assert!(StoredPassword::check(Some(&stored), "pw-2"));
        assert!(!StoredPassword::check(Some(&stored), "pw-1"));
        db.set_agent_password(2002, "new").unwrap();
        let (stored, _) = db.agent_credentials(2002).unwrap().expect("known");
        assert!(StoredPassword::check(Some(&stored), "new"));
        db.remove_agent(1001).unwrap();
        assert!(matches!(
            db.remove_agent(1001),
            Err(StoreError::UnknownAgent(1001))
        ));
        assert!(db.agent_credentials(1001).unwrap().is_none());
        assert!(matches!(
            db.set_agent_password(1001, "x"),
            Err(StoreError::UnknownAgent(1001))
        ));
    }
}
