"""``GuichetService``: the one object the JSON API, the web UI, the CLI and the demo call.

It holds the state (``ServiceCore``) and names each use case, family by family; the rules
live in the family modules, which are plain functions of the core. Each call runs in ONE
database transaction, checks the actor's rights, applies the pure domain rules, appends to
the hash-chained audit trail and returns output schemas; any refusal raises
``ServiceError`` before the commit, so a refused action changes nothing.
"""

from __future__ import annotations

from . import (
    accounts,
    audit_log,
    candidatures,
    certificates,
    evidence,
    habilitations,
    referentiel,
    schedule,
    solutions,
    trust_list,
)
from .base import ServiceCore


class GuichetService(ServiceCore):
    """All use cases of the guichet, by family (each a function ``f(core, ...)``)."""

    # accounts
    register = accounts.register
    create_account = accounts.create_account
    validate_account = accounts.validate_account
    list_accounts = accounts.list_accounts
    me = accounts.me
    get_organisation = accounts.get_organisation
    list_organisations = accounts.list_organisations
    bootstrap_account = accounts.bootstrap_account
    login = accounts.login
    issue_token_for = accounts.issue_token_for
    authenticate = accounts.authenticate
    principal_for = accounts.principal_for
    check_password = accounts.check_password
    revoke_token = accounts.revoke_token
    # solutions
    create_solution = solutions.create_solution
    rename_solution = solutions.rename_solution
    delete_solution = solutions.delete_solution
    get_solution = solutions.get_solution
    list_solutions = solutions.list_solutions
    update_components = solutions.update_components
    # candidatures
    create_candidature = candidatures.create_candidature
    list_candidatures = candidatures.list_candidatures
    get_candidature = candidatures.get_candidature
    update_form = candidatures.update_form
    submit_form = candidatures.submit_form
    validate_form = candidatures.validate_form
    return_form = candidatures.return_form
    abandon = candidatures.abandon
    add_collaborator = candidatures.add_collaborator
    parcours_checklist = candidatures.parcours_checklist
    declare_step = candidatures.declare_step
    # evidence
    upload_file = evidence.upload_file
    read_file = evidence.read_file
    deposit_evidence = evidence.deposit_evidence
    submit_chapter = evidence.submit_chapter
    review_chapter = evidence.review_chapter
    # certificates
    order_certificate = certificates.order_certificate
    renew_certificate = certificates.renew_certificate
    # habilitations
    decide = habilitations.decide
    list_habilitations = habilitations.list_habilitations
    get_habilitation = habilitations.get_habilitation
    suspend = habilitations.suspend
    reinstate = habilitations.reinstate
    withdraw = habilitations.withdraw
    # trust_list
    typed_trust_list = trust_list.trust_list
    trust_list_claims = trust_list.trust_list_claims
    signed_trust_list = trust_list.signed_trust_list
    jwks = trust_list.jwks
    # referentiel
    initialize = referentiel.initialize
    current_referentiel = referentiel.current_referentiel
    list_referentiel_versions = referentiel.list_referentiel_versions
    publish_referentiel = referentiel.publish_referentiel
    referentiel_changes = referentiel.referentiel_changes
    adopt_referentiel = referentiel.adopt_referentiel
    list_passi = referentiel.list_passi
    add_passi = referentiel.add_passi
    set_passi_active = referentiel.set_passi_active
    # schedule (the periodic job; `sweep` is its former name)
    tick = schedule.tick
    sweep = schedule.tick
    start_schedule = schedule.start_schedule
    # audit_log
    audit_entries = audit_log.audit_entries
    verify_audit = audit_log.verify_audit
    notifications = audit_log.notifications
    pending_notifications = audit_log.pending_notifications
    mark_sent = audit_log.mark_sent
