"""Schemathesis fuzzing of /openapi.json: no input makes the guichet answer 500.

Bounded (a fixed number of examples, derandomized) so it stays well under a minute; run
as the administrator (widest access), as a company's mandataire (candidate code paths) and
anonymously.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from confiance.core.jose import KeyStore
from confiance.guichet import schemas as sc
from confiance.guichet.api import create_app
from confiance.guichet.domain.model import AnsRole, ComponentKind, OrgRole, Role, SolutionKind
from confiance.pki import Pki

from .conftest import make_service
from .helpers import new_siren


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_openapi_fuzz_yields_no_server_error(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path, pki: Pki, conformity_keys: KeyStore
) -> None:
    # PostgreSQL enforces column lengths and integer ranges that SQLite ignores
    url = request.getfixturevalue("postgres_schema_url") if backend == "postgres" else f"sqlite:///{tmp_path / 'f.db'}"
    svc = make_service(url, tmp_path, pki, conformity_keys)
    svc.bootstrap_account("admin@ans.example", "Admin", None, [AnsRole.ADMIN])
    svc.bootstrap_account(
        "m@acme.example", "M", None, org=sc.OrganisationIn(name="Acme", siren=new_siren()), org_role=OrgRole.MANDATAIRE
    )
    admin_token = svc.issue_token_for("admin@ans.example").access_token
    company_token = svc.issue_token_for("m@acme.example").access_token
    me = svc.authenticate(company_token)
    assert me is not None
    sol = svc.create_solution(
        me,
        sc.SolutionIn(
            name="P", kind=SolutionKind.PROXY, components=[sc.ComponentIn(kind=ComponentKind.PROXY, name="p")]
        ),
    )
    svc.create_candidature(
        me, sc.CandidatureIn(role=Role.ELP, solution_id=sol.id, software_name="P", software_version="1")
    )

    app = create_app(svc)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 30
    strategy = st.one_of(*(op.as_strategy() for op in operations))
    failures: list[str] = []
    statuses: set[int] = set()

    @settings(max_examples=300, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(case=strategy, token=st.sampled_from([None, admin_token, company_token]))
    def run(case: schemathesis.Case, token: str | None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        response = case.call(headers=headers)
        statuses.add(response.status_code)
        if response.status_code >= 500:
            failures.append(f"{case.method} {case.formatted_path} → {response.status_code}: {response.text[:300]}")

    run()
    svc.db.dispose()
    assert not failures, "\n".join(failures[:10])
    assert {200, 401, 404, 422} <= statuses, statuses  # the fuzz reached real handlers, not only the validator
