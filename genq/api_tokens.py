"""API tokens: random secrets shown once; the database keeps only their sha256 and a short prefix."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, joinedload

from genq.db.models import ROLES, ApiToken, Team, iso, utcnow
from genq.errors import Conflict, InvalidInput, NotFound

TOKEN_PREFIX = "genq_"
LAST_USED_EVERY = 60.0  # seconds between updates of a token's last_used_at
MAX_TOKEN_CHARS = 200  # longer strings cannot be one of ours; refuse before hashing
OPERATOR_TEAM = "admin"  # its admin tokens are the operator's: every team's jobs, teams and tokens
TEAM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # the whole name: used with fullmatch, never match
QUOTED_CHARS = 40  # a name quoted in a message is cut after this many characters


def hash_token(token: str) -> str:
    """The sha256 hex digest stored for `token`."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def quoted(text: object, limit: int = QUOTED_CHARS) -> str:
    """`text` as a message quotes it: repr (control characters visible), cut after `limit` characters."""
    text = str(text)
    return repr(text) if len(text) <= limit else repr(text[:limit]) + "..."


def check_team_name(name: object) -> str:
    """Return `name` if it is a valid team name, else raise InvalidInput naming the problem. The one rule for
    team names: the API, the dashboard and the CLI all create teams through create_team or ensure_team."""
    if not isinstance(name, str):
        raise InvalidInput("a team name must be a string of 1-64 letters, digits, '.', '_' or '-'")
    if bad := next((c for c in name if ord(c) < 32 or 127 <= ord(c) < 160), None):
        raise InvalidInput(f"invalid team name {quoted(name)}: it holds a control character (U+{ord(bad):04X})")
    if not TEAM_NAME.fullmatch(name):
        raise InvalidInput(f"invalid team name {quoted(name)}: use 1-64 letters, digits, '.', '_' or '-', "
                           "starting with a letter or digit")
    return name


def same_team(a: str, b: str) -> bool:
    """Whether two team names name one team: names are compared ignoring case, as team_named does."""
    return a.lower() == b.lower()


def team_named(session: Session, name: str) -> Team | None:
    """The team called `name` ignoring case (names that differ only in case are one team's), or None."""
    return session.scalar(select(Team).where(func.lower(Team.name) == name.lower()).order_by(Team.id).limit(1))


def check_new_team_name(session: Session, name: object) -> str:
    """`name` if a new team may take it: valid, and no team has it already, ignoring case (Conflict naming it)."""
    name = check_team_name(name)
    if (existing := team_named(session, name)) is not None:
        if existing.name == name:
            raise Conflict(f"team {quoted(name)} already exists (change it with `genq team set`)")
        raise Conflict(f"team {quoted(existing.name)} already exists, and {quoted(name)} differs from it only in "
                       "case: team names are compared ignoring case (use that team, or another name)")
    return name


def ensure_team(session: Session, name: str) -> Team:
    """The team called `name` (ignoring case, as names are compared), created if missing."""
    name = check_team_name(name)
    team = team_named(session, name)
    if team is None:  # no team has the name, in any case: a new one takes it
        team = Team(name=name)
        session.add(team)
        session.flush()
    return team


def create_token(session: Session, team: str, role: str = "admin") -> str:
    """Create a token for `team` (created if missing) with `role`; return the token, which is never stored."""
    if role not in ROLES:
        raise InvalidInput(f"unknown role {quoted(role)} (known: {', '.join(ROLES)})")
    if role == "worker" and team != OPERATOR_TEAM:
        # a worker token reads and writes every team's artifacts: bound to a team, that team's admin would list
        # and revoke it as one of theirs
        raise InvalidInput(f"a worker token belongs to team '{OPERATOR_TEAM}', not {quoted(team)}: it reads and "
                           f"writes every team's artifacts (genq token create --team {OPERATOR_TEAM} --role worker)")
    team_row = ensure_team(session, team)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    session.add(
        ApiToken(
            team_id=team_row.id,
            role=role,
            token_hash=hash_token(token),
            prefix=token[: len(TOKEN_PREFIX) + 6],
        )
    )
    session.flush()
    return token


def authenticate(session: Session, token: str | None) -> ApiToken | None:
    """The live ApiToken row for `token` (with its team loaded), or None."""
    if not token or len(token) > MAX_TOKEN_CHARS:
        return None
    digest = hash_token(token)
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == digest, ApiToken.revoked_at.is_(None))
                         .options(joinedload(ApiToken.team)))  # one statement: a lazy load would be a second
    # The indexed lookup already matched; the constant-time compare keeps the check honest if that changes.
    if row is None or not hmac.compare_digest(row.token_hash, digest):
        return None
    now = utcnow()
    if row.last_used_at is None or (now - row.last_used_at).total_seconds() > LAST_USED_EVERY:
        # At most one write a minute per token: a busy script does not turn every read into a write.
        session.execute(update(ApiToken).where(ApiToken.id == row.id).values(last_used_at=now))
    return row


def list_tokens(session: Session, team: str | None = None) -> list[ApiToken]:
    """Every token (of `team`), oldest first, with its team loaded."""
    query = select(ApiToken).join(Team).order_by(ApiToken.id)
    if team is not None:
        query = query.where(func.lower(Team.name) == team.lower())
    rows = list(session.scalars(query))
    for row in rows:
        _ = row.team
    return rows


def revoke_token(session: Session, token_id: int) -> ApiToken:
    """Revoke token `token_id`: from now on it authenticates nothing. NotFound or Conflict otherwise."""
    row = session.get(ApiToken, token_id)
    if row is None:
        raise NotFound(f"token {token_id} not found (see `genq token list`)")
    if row.revoked_at is not None:
        raise Conflict(f"token {token_id} was already revoked at {iso(row.revoked_at)}")
    row.revoked_at = utcnow()
    _ = row.team
    return row
