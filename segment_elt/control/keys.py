"""Every stored secret against the configured Fernet keys: which cannot be read, and rewriting
all of them with the first key (`segment-elt keys reencrypt`, the last step of a key rotation)."""

from __future__ import annotations

import psycopg

from segment_elt.control import crypto

# (table, key column, encrypted column) of every secret stored encrypted
STORED = (
    ("control.connections", "connection_id", "secret_enc"),
    ("control.connections", "connection_id", "previous_secret_enc"),
    ("control.connections", "connection_id", "write_key_enc"),
    ("control.outbound", "connection_id", "write_key_enc"),
    ("control.privacy_key", "singleton", "key_enc"),
)


def unreadable(conn: psycopg.Connection) -> list[str]:
    """`table.column of key` for each stored secret no configured key decrypts (deleted connections
    included: their rows keep their secret)."""
    found = []
    for table, key, column in STORED:
        for row_key, token in conn.execute(f"select {key}, {column} from {table} where {column} is not null"):
            try:
                crypto.decrypt(token)
            except crypto.SecretKeyError:
                found.append(f"{table}.{column} of {row_key}")
    return found


def reencrypt_all(conn: psycopg.Connection) -> int:
    """Rewrite every stored secret with the first key, in one transaction; returns how many. Fails,
    writing nothing, when any secret cannot be decrypted, naming it."""
    crypto.check_keys()  # every key well-formed, even with nothing stored yet
    bad = unreadable(conn)
    if bad:
        raise crypto.SecretKeyError(
            f"{crypto.UNDECRYPTABLE}: {', '.join(bad[:5])}"
            + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
            + "; nothing rewritten"
        )
    done = 0
    with conn.transaction():
        for table, key, column in STORED:
            rows = conn.execute(f"select {key}, {column} from {table} where {column} is not null for update").fetchall()
            for row_key, token in rows:
                conn.execute(f"update {table} set {column} = %s where {key} = %s", (crypto.reencrypt(token), row_key))
            done += len(rows)
    return done
