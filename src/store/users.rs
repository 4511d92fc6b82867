//! The users of the recording API (`callbridge ctl users ...` manages them): names and
//! argon2id password hashes in PHC form.
//!
//! Owns: user name rules, hashing and checking passwords.
//! Must not: keep or log a password, or let the answer's timing tell whether a user exists (an
//! unknown name is checked against a dummy hash).

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

use super::db::Db;
use super::model::UnixMs;
use super::sql::{args, Sql};
use super::StoreError;

/// Longest user name.
const MAX_NAME_LEN: usize = 64;

/// An argon2id hash with `Argon2::default()`'s parameters of a password nobody has (a random
/// one, thrown away): checked against for unknown users so they take as long as known ones.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$\
    xk2B+QmNcmmfu3SM5TZO1w$CT2N65Z8tlSQ6zShzlAvWWsMeNjUF2hInEGbJ3n9Lhw";

/// A user as listed (never with the hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub name: String,
    pub created_ms: UnixMs,
}

/// A user's stored password hash, to check a password off the store thread (a check costs one
/// argon2 hash: tens of milliseconds that writes should not wait for).
#[derive(Clone)]
pub struct StoredPassword(pub(super) String);

impl std::fmt::Debug for StoredPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoredPassword(..)")
    }
}

impl StoredPassword {
    /// Whether `password` is the user's; `None` (no such user) takes as long and says no.
    pub fn check(stored: Option<&StoredPassword>, password: &str) -> bool {
        let phc = stored.map_or(DUMMY_HASH, |stored| stored.0.as_str());
        let matches = match PasswordHash::new(phc) {
            Ok(hash) => Argon2::default()
                .verify_password(password.as_bytes(), &hash)
                .is_ok(),
            Err(error) => {
                tracing::warn!(%error, "stored password hash cannot be read");
                false
            }
        };
        matches && stored.is_some()
    }
}

impl Db {
    /// Adds a user; refuses an invalid name, an empty password, or a name taken.
    pub fn add_user(
        &mut self,
        name: &str,
        password: &str,
        now_ms: UnixMs,
    ) -> Result<(), StoreError> {
        check_name(name)?;
        let hash = hash_password(password)?;
        let tx = self.sql.transaction()?;
        if user_hash(&tx, name)?.is_some() {
            return Err(StoreError::UserExists(name.to_string()));
        }
        tx.execute(
            "INSERT INTO users (name, password_hash, created_ms) VALUES (?1, ?2, ?3)",
            args![name, hash, now_ms],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Removes a user.
    pub fn remove_user(&mut self, name: &str) -> Result<(), StoreError> {
        let removed = self
            .sql
            .execute("DELETE FROM users WHERE name = ?1", args![name])?;
        if removed == 0 {
            return Err(StoreError::UnknownUser(name.to_string()));
        }
        Ok(())
    }

    /// Sets a user's password.
    pub fn set_password(&mut self, name: &str, password: &str) -> Result<(), StoreError> {
        let hash = hash_password(password)?;
        let changed = self.sql.execute(
            "UPDATE users SET password_hash = ?2 WHERE name = ?1",
            args![name, hash],
        )?;
        if changed == 0 {
            return Err(StoreError::UnknownUser(name.to_string()));
        }
        Ok(())
    }

    /// The users, by name.
    pub fn list_users(&self) -> Result<Vec<UserRecord>, StoreError> {
        self.sql
            .query("SELECT name, created_ms FROM users ORDER BY name", args![])?
            .iter()
            .map(|row| {
                Ok(UserRecord {
                    name: row.get(0)?,
                    created_ms: row.get(1)?,
                })
            })
            .collect()
    }

    /// Whether `password` is `name`'s. An unknown user answers false after the same work.
    pub fn verify_user(&self, name: &str, password: &str) -> Result<bool, StoreError> {
        let stored = self.stored_password(name)?;
        Ok(StoredPassword::check(stored.as_ref(), password))
    }

    /// The user's stored hash, for [`StoredPassword::check`] away from the store thread.
    pub fn stored_password(&self, name: &str) -> Result<Option<StoredPassword>, StoreError> {
        Ok(user_hash(&self.sql, name)?.map(StoredPassword))
    }
}

fn user_hash(conn: &Sql, name: &str) -> Result<Option<String>, StoreError> {
    conn.query_opt(
        "SELECT password_hash FROM users WHERE name = ?1",
        args![name],
    )?
    .map(|row| row.get(0))
    .transpose()
}

/// 1 to 64 characters of `A-Z a-z 0-9 . _ @ -` (safe in a log line, a URL and a shell).
fn check_name(name: &str) -> Result<(), StoreError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-');
    if name.is_empty() || name.len() > MAX_NAME_LEN || !name.chars().all(allowed) {
        return Err(StoreError::InvalidUserName(name.to_string()));
    }
    Ok(())
}

/// argon2id (v19, the crate's default cost: 19 MiB, 2 passes) with a fresh random salt.
pub(super) fn hash_password(password: &str) -> Result<String, StoreError> {
    if password.is_empty() {
        return Err(StoreError::EmptyPassword);
    }
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|error| StoreError::PasswordHash(error.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::temp_db;

    #[test]
    fn add_verify_passwd_remove() {
        let (_dir, mut db) = temp_db();
        db.add_user("alice", "s3cret", 1_000).expect("add");
        assert!(db.verify_user("alice", "s3cret").expect("verify"));
        assert!(!db.verify_user("alice", "wrong").expect("verify wrong"));
        assert_eq!(
            db.list_users().expect("list"),
            vec![UserRecord {
                name: "alice".to_string(),
                created_ms: 1_000
            }]
        );

        db.set_password("alice", "n3w").expect("passwd");
        assert!(!db.verify_user("alice", "s3cret").expect("old password"));
        assert!(db.verify_user("alice", "n3w").expect("new password"));

        db.remove_user("alice").expect("remove");
        assert!(!db.verify_user("alice", "n3w").expect("removed user"));
        assert!(db.list_users().expect("list").is_empty());
    }

    #[test]
    fn the_hash_is_an_argon2id_phc_string_never_the_password() {
        let (_dir, mut db) = temp_db();
        db.add_user("bob", "hunter2", 1).expect("add");
        let stored: String = db
            .sql
            .query_one(
                "SELECT password_hash FROM users WHERE name = 'bob'",
                crate::store::sql::args![],
            )
            .and_then(|row| row.get(0))
            .expect("row");
        assert!(stored.starts_with("$argon2id$v=19$"), "{stored}");
        assert!(!stored.contains("hunter2"));
        let shown = format!("{:?}", db.stored_password("bob").expect("stored"));
        assert!(!shown.contains("argon2"), "{shown}");
    }

    #[test]
    fn duplicate_and_unknown_users_are_errors() {
        let (_dir, mut db) = temp_db();
        db.add_user("carol", "pw", 1).expect("add");
        assert!(matches!(
            db.add_user("carol", "other", 2),
            Err(StoreError::UserExists(name)) if name == "carol"
        ));
        assert!(db.verify_user("carol", "pw").expect("first password kept"));
        assert!(matches!(
            db.remove_user("dave"),
            Err(StoreError::UnknownUser(_))
        ));
        assert!(matches!(
            db.set_password("dave", "pw"),
            Err(StoreError::UnknownUser(_))
        ));
    }

    #[test]
    fn an_unknown_user_is_checked_against_the_dummy_hash() {
        let (_dir, db) = temp_db();
        assert!(!db.verify_user("nobody", "").expect("verify"));
        assert!(!StoredPassword::check(None, "anything"));
        // The dummy must cost what a real hash costs: same algorithm and parameters.
        let dummy = PasswordHash::new(DUMMY_HASH).expect("dummy parses");
        let real = hash_password("x").expect("hash");
        let real = PasswordHash::new(&real).expect("real parses");
        assert_eq!(dummy.algorithm, real.algorithm);
        assert_eq!(dummy.version, real.version);
        assert_eq!(dummy.params, real.params);
    }

    #[test]
    fn a_stored_password_checks_off_the_database() {
        let (_dir, mut db) = temp_db();
        db.add_user("erin", "pw", 1).expect("add");
        let stored = db.stored_password("erin").expect("stored");
        assert!(StoredPassword::check(stored.as_ref(), "pw"));
        assert!(!StoredPassword::check(stored.as_ref(), "pW"));
        assert!(db.stored_password("frank").expect("unknown").is_none());
    }

    #[test]
    fn names_are_checked() {
        let (_dir, mut db) = temp_db();
        let long = "a".repeat(65);
        for bad in ["", "has space", "a/b", "ünï", "semi;colon", long.as_str()] {
            assert!(
                matches!(
                    db.add_user(bad, "pw", 1),
                    Err(StoreError::InvalidUserName(_))
                ),
                "{bad:?} accepted"
            );
        }
        let longest = "b".repeat(64);
        for good in ["a", "ops.team_1@example-org", longest.as_str()] {
            db.add_user(good, "pw", 1).expect(good);
        }
        assert_eq!(db.list_users().expect("list").len(), 3);
        assert!(matches!(
            db.add_user("x", "", 1),
            Err(StoreError::EmptyPassword)
        ));
        db.add_user("x", "pw", 1).expect("x");
        assert!(matches!(
            db.set_password("x", ""),
            Err(StoreError::EmptyPassword)
        ));
    }
}
