"""Storage: Alembic migrations match the models; the same flows run on PostgreSQL."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from confiance.core.jose import KeyStore
from confiance.core.tls import ClientAuth
from confiance.guichet import schemas as sc
from confiance.guichet.api import create_app
from confiance.guichet.db import Base, Database
from confiance.guichet.domain.model import AnsRole, ComponentKind, OrgRole, Role, SolutionKind
from confiance.guichet.services import GuichetService
from confiance.pki import IssuedCertificate, Pki
from tests.support import start_https

from .conftest import make_service, open_guichet
from .helpers import new_siren


def test_migrations_match_the_models(tmp_path: Path) -> None:
    """The registry's models and the web UI's two tables (their own metadata) both."""
    from confiance.guichet.web.sessions import WebBase

    db = Database(f"sqlite:///{tmp_path / 'm.db'}")
    db.migrate()
    db.migrate()  # idempotent
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), [Base.metadata, WebBase.metadata])  # type: ignore[arg-type]
    assert diff == [], diff


def test_web_tables_made_before_their_migration_are_kept(tmp_path: Path) -> None:
    """A database whose web tables were made by the old create_all (before revision 0004)
    migrates without error and keeps their rows."""
    import datetime as dt

    from alembic import command
    from alembic.config import Config

    from confiance.guichet.db import MIGRATIONS_DIR
    from confiance.guichet.web.sessions import SessionStore, WebBase

    db = Database(f"sqlite:///{tmp_path / 'old.db'}")
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0003")
    WebBase.metadata.create_all(db.engine)  # what the web edge did before
    now = dt.datetime(2026, 11, 28, tzinfo=dt.UTC)
    token = SessionStore(db.engine).create(1, "A", now).token
    db.migrate()
    assert SessionStore(db.engine).lookup(token, now) is not None
    with db.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), [Base.metadata, WebBase.metadata]) == []  # type: ignore[arg-type]


def _flow(svc: GuichetService) -> None:
    svc.bootstrap_account("v@ans.example", "V", None, [AnsRole.VERIFIER])
    svc.bootstrap_account(
        "m@acme.example", "M", None, org=sc.OrganisationIn(name="Acme", siren=new_siren()), org_role=OrgRole.MANDATAIRE
    )
    verifier = svc.authenticate(svc.issue_token_for("v@ans.example").access_token)
    me = svc.authenticate(svc.issue_token_for("m@acme.example").access_token)
    assert verifier and me
    sol = svc.create_solution(
        me,
        sc.SolutionIn(
            name="P", kind=SolutionKind.PROXY, components=[sc.ComponentIn(kind=ComponentKind.PROXY, name="p")]
        ),
    )
    cand = svc.create_candidature(
        me, sc.CandidatureIn(role=Role.ELP, solution_id=sol.id, software_name="P", software_version="1")
    )
    svc.submit_form(
        me,
        cand.id,
        sc.CommitmentsIn(respect_referentiels_cgu=True, exactitude_informations=True, acceptation_audits=True),
    )
    svc.validate_form(verifier, cand.id, sc.ActionIn())
    svc.deposit_evidence(me, cand.id, sc.EvidenceIn(requirement_id="TLS-01", kind="document", description="TLS 1.2+"))  # type: ignore[arg-type]
    detail = svc.get_candidature(me, cand.id)
    assert detail.status == "depot_preuves" and detail.evidence[0].requirement_id == "TLS-01"
    assert svc.verify_audit().ok


@pytest.mark.postgres
def test_postgres_flow_and_concurrent_audit_appends(
    postgres_schema_url: str, tmp_path: Path, pki: Pki, conformity_keys: KeyStore
) -> None:
    svc = make_service(postgres_schema_url, tmp_path, pki, conformity_keys)
    try:
        _flow(svc)
        _concurrent_writers(svc)
    finally:
        svc.db.dispose()


def _concurrent_writers(svc: GuichetService) -> None:
    """Many writers at once: the audit head lock keeps one chain, nobody fails."""
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            svc.bootstrap_account(f"u{i}@ans.example", f"U{i}", None, [AnsRole.COLLEGE])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    check = svc.verify_audit()
    assert check.ok, check


def test_sqlite_flow(tmp_path: Path, pki: Pki, conformity_keys: KeyStore) -> None:
    svc = make_service(f"sqlite:///{tmp_path / 'g.db'}", tmp_path, pki, conformity_keys)
    try:
        _flow(svc)
        _concurrent_writers(svc)
    finally:
        svc.db.dispose()


@pytest.mark.postgres
def test_postgres_api_journey_and_cascade(
    postgres_schema_url: str, tmp_path: Path, pki: Pki, conformity_keys: KeyStore, server_cert: IssuedCertificate
) -> None:
    """The acceptance journey over HTTPS with the registry on PostgreSQL."""
    svc = make_service(postgres_schema_url, tmp_path, pki, conformity_keys)
    server = start_https(create_app(svc), pki, server_cert, ClientAuth.NONE)
    g = open_guichet(svc, server.url, pki, conformity_keys)
    try:
        ed = g.company("Editeur Proxy")
        proxy = g.solution(ed, "ProxyP", "proxy")
        elp = g.habilitate(ed, "ELP", proxy)
        assert elp["valid"] and elp["environment"] == "BAS"
        host = g.company("Hébergeur")
        osp = g.habilitate(host, "OSP", proxy)
        g.college.ok(g.college.post(f"/api/habilitations/{elp['id']}/withdraw", {"reason": "retrait"}))
        assert g.admin.ok(g.admin.get(f"/api/habilitations/{osp['id']}"))["at_risk"]
        assert g.admin.ok(g.admin.get("/api/audit/verify"))["ok"]
    finally:
        g.http.close()
        server.stop()
        svc.db.dispose()
