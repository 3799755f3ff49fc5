"""Who is calling: a Bearer token, or the session cookie /login sets. Roles: admin, member, viewer, worker."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from flask import Blueprint, flash, g, redirect, render_template, request, session, url_for

from genq.api_tokens import OPERATOR_TEAM, authenticate
from genq.db.models import ApiToken
from genq.errors import Forbidden, Unauthorized

bp = Blueprint("auth", __name__)


@dataclass(frozen=True)
class Principal:
    """The caller: its token, team and role (a plain value, safe to use after the DB session closed)."""

    token_id: int
    team_id: int
    team: str
    role: str
    via: str  # "bearer" or "session"

    @property
    def can_write(self) -> bool:
        return self.role != "viewer"

    @property
    def is_operator(self) -> bool:
        """The `admin` team's admin: sees and manages every team."""
        return self.team == OPERATOR_TEAM and self.role == "admin"

    @property
    def scope(self) -> int | None:
        """The team whose rows this caller sees; None: every team's (the operator)."""
        return None if self.is_operator else self.team_id


def _principal(row: ApiToken, via: str) -> Principal:
    return Principal(row.id, row.team_id, row.team.name, row.role, via)


def bearer_token(header: str) -> str | None:
    """The token of an Authorization header of the form 'Bearer TOKEN', else None."""
    scheme, _, token = header.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def current_principal() -> Principal | None:
    """The caller, or None. A present but bad Authorization header never falls back to the cookie."""
    if "principal" in g:
        return g.principal
    from genq.web import state

    principal = None
    header = request.headers.get("Authorization")
    if header is not None:
        if (token := bearer_token(header)) is not None:
            with state().db.session() as s:
                row = authenticate(s, token)
                principal = _principal(row, "bearer") if row else None
    elif isinstance(session.get("auth"), dict):
        token_id, fingerprint = session["auth"].get("id"), session["auth"].get("fp")
        if isinstance(token_id, int):
            with state().db.session() as s:
                row = s.get(ApiToken, token_id)
                if row is not None and row.revoked_at is None and row.token_hash[:16] == fingerprint:
                    principal = _principal(row, "session")
    g.principal = principal
    return principal


def require_principal() -> Principal:
    """The caller, or Unauthorized."""
    principal = current_principal()
    if principal is None:
        if "Authorization" in request.headers:
            if bearer_token(request.headers["Authorization"]) is None:
                raise Unauthorized("the Authorization header must be 'Bearer TOKEN'")
            raise Unauthorized("invalid or revoked token")
        raise Unauthorized("authentication required: send 'Authorization: Bearer TOKEN'")
    return principal


def refuse_worker_token() -> None:
    """Forbidden when the caller holds a `worker` token (those only reach /api/v1/store)."""
    principal = current_principal()
    if principal is not None and principal.role == "worker":
        raise Forbidden("worker tokens can only move artifacts (/api/v1/store); use a member or viewer token")


def require_writer(action: str = "change anything") -> Principal:
    """The caller if its role may submit, cancel or upload, else Forbidden."""
    principal = require_principal()
    if not principal.can_write:
        raise Forbidden(f"viewer tokens cannot {action}")
    return principal


def safe_next(target: str | None) -> str:
    """A local path to go to after login; anything pointing elsewhere becomes '/'."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    parts = urlsplit(target)
    return target if not parts.scheme and not parts.netloc else "/"


@bp.route("/login", methods=["GET", "POST"])
def login():
    """Sign in with an API token; a session cookie remembers it."""
    next_url = safe_next(request.values.get("next"))
    if request.method == "GET":
        return render_template("login.html", next=next_url, error=None)
    token = (request.form.get("token") or "").strip()
    from genq.web import state

    with state().db.session() as s:
        row = authenticate(s, token)
        if row is not None:
            session.clear()
            session["auth"] = {"id": row.id, "fp": row.token_hash[:16]}
            g.pop("principal", None)
            flash(f"Signed in to team {row.team.name} as {row.role}.")
            return redirect(next_url)
    return render_template("login.html", next=next_url, error="That token is not valid."), 401


@bp.route("/logout", methods=["GET", "POST"])
def logout():
    """Forget the session cookie."""
    session.clear()
    return redirect(url_for("auth.login"))
