#!/usr/bin/env python3
"""Drives `usersync sim` with Microsoft's own Graph SDK for Python.

Usage: check.py PATH/TO/usersync [--users N] [--page-size-cap N]

Starts the simulator over HTTPS (trusting the CA it writes), authenticates
with azure-identity's async ClientSecretCredential against the simulator's
token endpoint, and reads the tenant through msgraph-sdk's normal request
builders, msgraph-core's PageIterator and BatchRequestContent. Every check
prints PASS/FAIL; the last line is `N passed, M failed`, and the exit status
is non-zero on any failure. The simulator is stopped in every case.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from typing import Any, Callable, Optional
from urllib.parse import urlparse

import httpx
from azure.identity.aio import ClientSecretCredential
from kiota_abstractions.base_request_configuration import RequestConfiguration
from kiota_serialization_json.json_parse_node_factory import JsonParseNodeFactory
from msgraph import GraphRequestAdapter, GraphServiceClient
from msgraph.graph_request_adapter import options as GRAPH_DEFAULT_OPTIONS
from msgraph.generated.groups.groups_request_builder import GroupsRequestBuilder
from msgraph.generated.groups.item.members.members_request_builder import (
    MembersRequestBuilder,
)
from msgraph.generated.models.group import Group
from msgraph.generated.models.group_collection_response import GroupCollectionResponse
from msgraph.generated.models.mailbox_settings import MailboxSettings
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.generated.models.user import User
from msgraph.generated.models.user_collection_response import UserCollectionResponse
from msgraph.generated.users.delta.delta_request_builder import DeltaRequestBuilder
from msgraph.generated.users.item.user_item_request_builder import (
    UserItemRequestBuilder,
)
from msgraph.generated.users.users_request_builder import UsersRequestBuilder
from msgraph_core import GraphClientFactory
from msgraph_core.authentication import AzureIdentityAuthenticationProvider
from msgraph_core.requests.batch_request_content import BatchRequestContent
from msgraph_core.requests.batch_request_item import BatchRequestItem
from msgraph_core.tasks.page_iterator import PageIterator

USER_SELECT = [
    "id",
    "userPrincipalName",
    "mail",
    "proxyAddresses",
    "displayName",
    "accountEnabled",
    "assignedLicenses",
    "userType",
]


class Checks:
    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0

    def ok(self, cond: bool, name: str, detail: Any = "") -> bool:
        if cond:
            self.passed += 1
            print(f"PASS {name}", flush=True)
        else:
            self.failed += 1
            print(f"FAIL {name}{': ' + str(detail) if detail != '' else ''}", flush=True)
        return bool(cond)

    def fail(self, name: str, detail: Any) -> None:
        self.ok(False, name, detail)

    async def run(self, name: str, coro_fn: Callable[[], Any]) -> Any:
        """Runs one group of checks; an exception fails it and the run goes on."""
        try:
            return await coro_fn()
        except ODataError as e:
            err = e.error
            self.fail(
                name,
                f"ODataError {e.response_status_code}: "
                f"{getattr(err, 'code', None)}: {getattr(err, 'message', None)}",
            )
        except Exception as e:  # noqa: BLE001 - report and continue
            self.fail(name, f"{type(e).__name__}: {e}")
            traceback.print_exc()
        return None


def _die_with_parent() -> None:
    """In the child before exec: on Linux, have the kernel send SIGTERM to the
    simulator if this script dies without running its cleanup (SIGKILL)."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            pr_set_pdeathsig = 1
            ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
        except Exception:  # noqa: BLE001 - best effort
            pass


class Sim:
    """The `usersync sim` child process."""

    def __init__(self, binary: str, args: list[str]) -> None:
        self.proc = subprocess.Popen(
            [binary, "sim", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            # Own process group: a Ctrl-C in the terminal reaches us, and we
            # stop the simulator ourselves.
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        self.stderr_lines: list[str] = []
        threading.Thread(target=self._drain_stderr, daemon=True).start()

    def _drain_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr_lines.append(line.rstrip())

    def info(self, timeout: float = 60.0) -> dict:
        result: dict = {}

        def read() -> None:
            assert self.proc.stdout is not None
            result["line"] = self.proc.stdout.readline()

        t = threading.Thread(target=read, daemon=True)
        t.start()
        t.join(timeout)
        line = result.get("line")
        if not line:
            raise RuntimeError(
                "simulator printed no start line; stderr: " + "\n".join(self.stderr_lines[-20:])
            )
        return json.loads(line)

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        # The simulator stops cleanly on SIGINT (Ctrl-C).
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def make_client(info: dict, ca_file: str) -> tuple[GraphServiceClient, ClientSecretCredential, GraphRequestAdapter]:
    graph_url = info["graph_url"].rstrip("/")
    host = urlparse(graph_url).hostname
    # azure-identity insists on an https authority; it takes the host (with
    # port) and calls {authority}/{tenant}/oauth2/v2.0/token. The async
    # ClientSecretCredential talks to the token endpoint directly (no MSAL
    # instance discovery), so disable_instance_discovery is not needed.
    # connection_verify makes azure-core's aiohttp transport trust the sim's CA.
    credential = ClientSecretCredential(
        info["tenant_id"],
        info["client_id"],
        info["client_secret"],
        authority=info["authority_url"],
        connection_verify=ca_file,
    )
    # SDK workaround: the auth provider only attaches tokens for hosts in
    # allowed_hosts (Microsoft's national clouds by default), so the
    # simulator's host must be added. No scopes are given: like for national
    # clouds, the provider derives `https://{host}/.default` (without port)
    # from the request URL, and the simulator accepts that as its own resource.
    auth = AzureIdentityAuthenticationProvider(credential, allowed_hosts=[host])
    ssl_ctx = ssl.create_default_context(cafile=ca_file)
    # Same settings as the SDK's default client (HTTP/2, its timeouts), plus
    # the CA and the simulator's base URL; then the SDK's default middleware
    # (retry, redirect, compression, telemetry, ...).
    http = httpx.AsyncClient(
        verify=ssl_ctx,
        http2=True,
        timeout=httpx.Timeout(100.0, connect=30.0),
        base_url=f"{graph_url}/v1.0",
    )
    http = GraphClientFactory.create_with_default_middleware(client=http, options=GRAPH_DEFAULT_OPTIONS)
    adapter = GraphRequestAdapter(auth, client=http)
    adapter.base_url = f"{graph_url}/v1.0"
    return GraphServiceClient(request_adapter=adapter), credential, adapter


# Properties Graph v1.0 returns that its v1.0 schema (hence the SDK's models)
# lacks: groups carry creationOptions (like resourceBehaviorOptions and
# resourceProvisioningOptions before the schema gained them, see
# msgraph-sdk-go#225), and group delta items carry members@delta.
KNOWN_EXTRA = {"creationOptions", "members@delta"}


def unknown_props(obj: Any, path: str = "", out: Optional[set] = None) -> set:
    """Names the SDK could not map to a model property (its additional_data),
    over a parsed response and everything nested in it; OData annotations and
    KNOWN_EXTRA excepted. Anything else is a property v1.0 does not have."""
    out = set() if out is None else out
    if isinstance(obj, list):
        for x in obj:
            unknown_props(x, path, out)
        return out
    if not hasattr(obj, "additional_data"):
        return out
    name = f"{path}{type(obj).__name__}"
    for k in obj.additional_data or {}:
        if not k.startswith("@odata.") and k not in KNOWN_EXTRA:
            out.add(f"{name}.{k}")
    for k, v in vars(obj).items():
        if k not in ("additional_data", "backing_store") and (isinstance(v, list) or hasattr(v, "additional_data")):
            unknown_props(v, f"{name}.{k}>", out)
    return out


def eventual() -> RequestConfiguration:
    cfg: RequestConfiguration = RequestConfiguration()
    cfg.headers.add("ConsistencyLevel", "eventual")
    return cfg


async def iterate_all(response: Any, adapter: GraphRequestAdapter) -> list:
    """Every item of a collection, following @odata.nextLink with the SDK's
    PageIterator (which parses later pages as the first page's type)."""
    items: list = []
    it = PageIterator(response, adapter)
    await it.iterate(lambda item: items.append(item) or True)
    return items


async def check_all(c: Checks, info: dict, ca_file: str, n_users: int, cap: int) -> None:
    client, credential, adapter = make_client(info, ca_file)
    try:
        await run_checks(c, client, credential, adapter, info, n_users, cap)
    finally:
        await credential.close()
        await adapter._http_client.aclose()  # noqa: SLF001 - we created it


async def run_checks(
    c: Checks,
    client: GraphServiceClient,
    credential: ClientSecretCredential,
    adapter: GraphRequestAdapter,
    info: dict,
    n_users: int,
    cap: int,
) -> None:
    state: dict[str, Any] = {}

    # -- token ---------------------------------------------------------------
    async def token() -> None:
        t = await credential.get_token("https://graph.microsoft.com/.default")
        c.ok(t.token.count(".") == 2 and t.expires_on > time.time(), "token: graph.microsoft.com/.default")
        host = urlparse(info["graph_url"]).hostname
        t = await credential.get_token(f"https://{host}/.default")
        c.ok(bool(t.token), "token: the simulator's own host as resource")

    await c.run("token", token)

    # -- users (PageIterator over $top=999 with a small server cap) ----------
    async def users() -> None:
        qp = UsersRequestBuilder.UsersRequestBuilderGetQueryParameters(select=USER_SELECT, top=999)
        first = await client.users.get(request_configuration=RequestConfiguration(query_parameters=qp))
        c.ok(isinstance(first, UserCollectionResponse), "users: first page parsed", type(first))
        c.ok(
            len(first.value or []) == min(cap, n_users),
            "users: first page is capped",
            f"{len(first.value or [])} items, cap {cap}",
        )
        c.ok(bool(first.odata_next_link) == (n_users > cap), "users: @odata.nextLink present", first.odata_next_link)
        items = await iterate_all(first, adapter)
        c.ok(len(items) == n_users, "users: PageIterator yields every user", f"{len(items)} != {n_users}")
        ids = [u.id for u in items]
        c.ok(len(set(ids)) == len(ids), "users: ids unique across pages")
        c.ok(all(isinstance(u, User) for u in items), "users: items are User")
        bad = [
            u.id
            for u in items
            if not (u.id and u.user_principal_name and u.display_name)
            or u.account_enabled is None
            or u.user_type not in ("Member", "Guest")
            or u.assigned_licenses is None
            or u.proxy_addresses is None
        ]
        c.ok(not bad, "users: selected properties present and typed", bad[:3])
        extra = sorted(unknown_props(items))
        c.ok(not extra, "users: no properties outside the v1.0 user", extra)
        default = await client.users.get()
        extra = sorted(unknown_props(default))
        c.ok(not extra, "users: default projection has only v1.0 properties", extra)
        unselected = [u.id for u in items if u.given_name or u.job_title or u.created_date_time]
        c.ok(not unselected, "users: unselected properties absent", unselected[:3])
        smtp_bad = [
            u.user_principal_name
            for u in items
            if u.mail and len([p for p in u.proxy_addresses if p.startswith("SMTP:")]) != 1
        ]
        c.ok(not smtp_bad, "users: one SMTP: primary proxy address per mailbox", smtp_bad[:3])
        # Real tenants have some users whose primary moved on while mail kept the old one;
        # the generator makes a few, not many.
        moved = [
            u.user_principal_name
            for u in items
            if u.mail and f"SMTP:{u.mail}" not in u.proxy_addresses
        ]
        mailboxes = len([u for u in items if u.mail])
        c.ok(
            len(moved) * 20 < mailboxes,
            "users: mail is the SMTP: primary for nearly every mailbox",
            moved[:3],
        )
        lic = [lic.sku_id for u in items for lic in u.assigned_licenses]
        c.ok(all(lic) and len(lic) > 0, "users: assignedLicenses[].skuId parsed as UUIDs")
        state["users"] = items

        count = await client.users.count.get(request_configuration=eventual())
        c.ok(count == n_users, "users/$count (ConsistencyLevel: eventual)", count)

        qp = UsersRequestBuilder.UsersRequestBuilderGetQueryParameters(select=["id"], count=True, top=5)
        cfg = eventual()
        cfg.query_parameters = qp
        page = await client.users.get(request_configuration=cfg)
        c.ok(page.odata_count == n_users, "users: $count=true gives @odata.count", page.odata_count)

    await c.run("users", users)

    # -- one user, manager, a missing user -------------------------------------
    async def one_user() -> None:
        items = state.get("users") or []
        if not items:
            c.fail("user: by id", "no users listed")
            return
        u0 = items[0]
        qp = UserItemRequestBuilder.UserItemRequestBuilderGetQueryParameters(
            select=["id", "displayName", "mail", "userPrincipalName"]
        )
        u = await client.users.by_user_id(u0.id).get(
            request_configuration=RequestConfiguration(query_parameters=qp)
        )
        c.ok(u is not None and u.id == u0.id and u.user_principal_name == u0.user_principal_name, "user: by id")
        u = await client.users.by_user_id(u0.user_principal_name).get()
        c.ok(u is not None and u.id == u0.id, "user: by userPrincipalName")
        try:
            await client.users.by_user_id("00000000-0000-0000-0000-000000000001").get()
            c.fail("user: missing user raises ODataError 404", "no error")
        except ODataError as e:
            c.ok(
                e.response_status_code == 404 and e.error is not None and e.error.code == "Request_ResourceNotFound",
                "user: missing user raises ODataError 404 Request_ResourceNotFound",
                f"{e.response_status_code} {e.error and e.error.code}",
            )

    await c.run("user", one_user)

    # -- groups and members ------------------------------------------------------
    async def groups() -> None:
        qp = GroupsRequestBuilder.GroupsRequestBuilderGetQueryParameters(
            select=["id", "displayName", "mail", "mailEnabled", "securityEnabled", "groupTypes", "proxyAddresses"],
            top=999,
        )
        first = await client.groups.get(request_configuration=RequestConfiguration(query_parameters=qp))
        groups = await iterate_all(first, adapter)
        count = await client.groups.count.get(request_configuration=eventual())
        c.ok(len(groups) > 0 and len(groups) == count, "groups: PageIterator count equals groups/$count", f"{len(groups)} vs {count}")
        c.ok(all(isinstance(g, Group) and g.id and g.display_name for g in groups), "groups: items are Group")
        default = await client.groups.get()
        c.ok(not unknown_props(default), "groups: default projection has only v1.0 properties", unknown_props(default))
        c.ok(
            all(g.mail_enabled is not None and g.security_enabled is not None and g.group_types is not None for g in groups),
            "groups: selected flags present",
        )
        user_ids = {u.id for u in state.get("users") or []}
        group_ids = {g.id for g in groups}
        member_total = 0
        mismatch = []
        unknown = []
        extras: set = set()
        for g in groups:
            mqp = MembersRequestBuilder.MembersRequestBuilderGetQueryParameters(
                select=["id", "displayName"], top=999
            )
            mcfg = eventual()
            mcfg.query_parameters = mqp
            mqp.count = True
            page = await client.groups.by_group_id(g.id).members.get(request_configuration=mcfg)
            members = await iterate_all(page, adapter)
            if page.odata_count != len(members):
                mismatch.append((g.display_name, page.odata_count, len(members)))
            for m in members:
                if not (
                    (isinstance(m, User) and m.id in user_ids)
                    or (isinstance(m, Group) and m.id in group_ids)
                ):
                    unknown.append((g.display_name, type(m).__name__, m.id))
            member_total += len(members)
            mcount = await client.groups.by_group_id(g.id).members.count.get(request_configuration=eventual())
            if mcount != len(members):
                mismatch.append((g.display_name, "$count", mcount, len(members)))
            extras |= unknown_props(members)
        c.ok(member_total > 0, "group members: some members listed", member_total)
        c.ok(not mismatch, "group members: @odata.count and members/$count match the pages", mismatch[:3])
        c.ok(not extras, "group members: only v1.0 properties", extras)
        c.ok(not unknown, "group members: typed User/Group objects of this tenant", unknown[:3])

    await c.run("groups", groups)

    # -- domains, organization, subscribedSkus --------------------------------
    async def tenant() -> None:
        domains = await client.domains.get()
        c.ok(not unknown_props(domains), "domains: only v1.0 properties", unknown_props(domains))
        ids = sorted(d.id for d in domains.value)
        c.ok(ids == sorted(info["domains"]), "domains: the tenant's domains", ids)
        initial = [d.id for d in domains.value if d.is_initial]
        c.ok(initial == [info["initial_domain"]], "domains: isInitial", initial)
        default = [d.id for d in domains.value if d.is_default]
        c.ok(default == info["mail_domains"][:1], "domains: isDefault is the first mail domain", default)
        email = [d.id for d in domains.value if d.is_verified and "Email" in (d.supported_services or [])]
        c.ok(set(info["mail_domains"]) <= set(email), "domains: mail domains support Email", email)

        org = await client.organization.get()
        c.ok(not unknown_props(org), "organization: only v1.0 properties", unknown_props(org))
        c.ok(len(org.value) == 1 and org.value[0].id == info["tenant_id"], "organization: one, the tenant")
        vd = {d.name for d in org.value[0].verified_domains or []}
        c.ok(info["initial_domain"] in vd, "organization: verifiedDomains include the initial domain", vd)
        o1 = await client.organization.by_organization_id(info["tenant_id"]).get()
        c.ok(o1 is not None and o1.id == info["tenant_id"], "organization: by id")

        skus = await client.subscribed_skus.get()
        c.ok(not unknown_props(skus), "subscribedSkus: only v1.0 properties", unknown_props(skus))
        c.ok(len(skus.value) > 0, "subscribedSkus: listed", len(skus.value))
        c.ok(all(s.sku_id and s.sku_part_number and s.prepaid_units is not None for s in skus.value), "subscribedSkus: typed")
        users = state.get("users") or []
        if users:
            used: dict = {}
            for u in users:
                for lic in u.assigned_licenses:
                    used[lic.sku_id] = used.get(lic.sku_id, 0) + 1
            known = {s.sku_id for s in skus.value}
            c.ok(set(used) <= known, "subscribedSkus: every assigned skuId is subscribed", set(used) - known)
            wrong = [
                (s.sku_part_number, s.consumed_units, used.get(s.sku_id, 0))
                for s in skus.value
                if s.consumed_units != used.get(s.sku_id, 0)
            ]
            c.ok(not wrong, "subscribedSkus: consumedUnits equal assigned licences", wrong)

    await c.run("tenant", tenant)

    # -- users delta: the initial round up to the deltaLink ------------------
    async def delta() -> None:
        qp = DeltaRequestBuilder.DeltaRequestBuilderGetQueryParameters(select=USER_SELECT)
        resp = await client.users.delta.get(request_configuration=RequestConfiguration(query_parameters=qp))
        seen: list = []
        pages = 0
        while True:
            pages += 1
            seen.extend(resp.value or [])
            if resp.odata_next_link:
                resp = await client.users.delta.with_url(resp.odata_next_link).get()
                continue
            break
        c.ok(len(seen) == n_users, "users delta: initial round returns every user", f"{len(seen)} != {n_users}")
        c.ok(pages > 1 or n_users <= cap, "users delta: paged", pages)
        c.ok(bool(resp.odata_delta_link), "users delta: round ends with @odata.deltaLink")
        c.ok(all(isinstance(u, User) and u.id for u in seen), "users delta: items are User")
        c.ok(not unknown_props(seen), "users delta: only v1.0 properties", unknown_props(seen))
        if resp.odata_delta_link:
            again = await client.users.delta.with_url(resp.odata_delta_link).get()
            c.ok(
                again is not None and not again.value and bool(again.odata_delta_link),
                "users delta: deltaLink with no changes is empty with a new deltaLink",
            )
        latest = await client.users.delta.with_url(
            f"{adapter.base_url}/users/delta()?$deltatoken=latest"
        ).get()
        c.ok(latest is not None and not latest.value and bool(latest.odata_delta_link), "users delta: $deltatoken=latest")

    await c.run("delta", delta)

    # -- $batch through BatchRequestContent -----------------------------------
    async def batch() -> None:
        users = state.get("users") or []
        if not users:
            c.fail("batch", "no users listed")
            return
        u0 = users[0]
        base = adapter.base_url.rstrip("/")

        def item(req_info: Any, item_id: str) -> BatchRequestItem:
            it = BatchRequestItem(req_info, id=item_id)
            # SDK workaround (msgraph-sdk-python#1015, msgraph-sdk-python-core#1116):
            # BatchRequestItem keeps the absolute URL of the RequestInformation,
            # which Graph answers with 400 per item; $batch URLs are relative
            # to the version ("/users/{id}"). The simulator answers absolute
            # URLs with 400 like Graph, so make them relative here.
            if it.url.startswith(base):
                it.url = it.url[len(base):]
            return it

        content = BatchRequestContent()
        u_req = client.users.by_user_id(u0.id).to_get_request_information()
        content.add_request("user", item(u_req, "user"))
        gqp = GroupsRequestBuilder.GroupsRequestBuilderGetQueryParameters(select=["id", "displayName"], top=5)
        g_req = client.groups.to_get_request_information(
            request_configuration=RequestConfiguration(query_parameters=gqp)
        )
        content.add_request("groups", item(g_req, "groups"))
        content.add_request("domains", item(client.domains.to_get_request_information(), "domains"))
        missing = client.users.by_user_id("00000000-0000-0000-0000-000000000001").to_get_request_information()
        content.add_request("missing", item(missing, "missing"))
        ms_req = client.users.by_user_id(u0.id).mailbox_settings.to_get_request_information()
        content.add_request("mailbox", item(ms_req, "mailbox"))
        resp = await client.batch.post(batch_request_content=content)
        codes = resp.get_response_status_codes()
        c.ok(
            codes == {"user": 200, "groups": 200, "domains": 200, "missing": 404, "mailbox": 200},
            "batch: sub-response statuses",
            codes,
        )
        miss = resp.get_response_by_id("missing")
        c.ok(miss is not None and miss.status == 404, "batch: 404 item kept")
        ct = (resp.get_response_by_id("user").content_type or "").split(";")[0]
        c.ok(ct == "application/json", "batch: sub-response Content-Type header", ct)

        # SDK workaround (kiota-python#737): BatchResponseItem reads `body`
        # with get_bytes_value(), which takes only base64 strings, so the JSON
        # object bodies Graph sends for JSON responses come out as None and
        # get_response_by_id(id, User) cannot deserialize them. Send the same
        # SDK-built $batch request, take the raw answer, and parse each body
        # with the SDK's JSON parse node into its model.
        req_info = await client.batch.to_post_request_information(content)
        raw = await adapter.send_primitive_async(req_info, "bytes", {})
        doc = json.loads(raw)
        bodies = {r["id"]: r for r in doc.get("responses", [])}
        c.ok(
            all(isinstance(r.get("body"), dict) for r in bodies.values()),
            "batch: JSON bodies are JSON objects",
        )
        factory = JsonParseNodeFactory()

        def parse(item_id: str, model: Any) -> Any:
            body = json.dumps(bodies[item_id]["body"]).encode()
            return factory.get_root_parse_node("application/json", body).get_object_value(model)

        bu = parse("user", User)
        c.ok(isinstance(bu, User) and bu.id == u0.id, "batch: user body deserializes to User")
        bg = parse("groups", GroupCollectionResponse)
        c.ok(0 < len(bg.value or []) <= 5 and all(g.id for g in bg.value), "batch: groups body deserializes")
        bm = parse("mailbox", MailboxSettings)
        c.ok(bool(bm.time_zone), "batch: mailboxSettings body deserializes")
        be = parse("missing", ODataError)
        c.ok(
            be.error is not None and be.error.code == "Request_ResourceNotFound",
            "batch: 404 body is an OData error",
            be.error and be.error.code,
        )

    await c.run("batch", batch)

    # -- mailboxSettings ----------------------------------------------------------
    async def mailbox() -> None:
        users = state.get("users") or []
        # A licensed member has an Exchange mailbox.
        member = next(
            (u for u in users if u.user_type == "Member" and u.account_enabled and u.assigned_licenses and u.mail),
            None,
        )
        if member is None:
            c.fail("mailboxSettings", "no licensed member found")
            return
        ms = await client.users.by_user_id(member.id).mailbox_settings.get()
        c.ok(isinstance(ms, MailboxSettings), "mailboxSettings: parsed", type(ms))
        c.ok(not unknown_props(ms), "mailboxSettings: only v1.0 properties", unknown_props(ms))
        c.ok(bool(ms.time_zone), "mailboxSettings: timeZone", ms.time_zone)
        c.ok(ms.user_purpose is not None and ms.user_purpose.value == "user", "mailboxSettings: userPurpose user", ms.user_purpose)
        c.ok(ms.language is not None and bool(ms.language.locale), "mailboxSettings: language.locale")
        c.ok(
            ms.working_hours is not None and bool(ms.working_hours.days_of_week),
            "mailboxSettings: workingHours.daysOfWeek",
        )
        c.ok(
            ms.automatic_replies_setting is not None and ms.automatic_replies_setting.status is not None,
            "mailboxSettings: automaticRepliesSetting.status",
        )

    await c.run("mailbox", mailbox)


async def check_throttled(c: Checks, info: dict, ca_file: str, n_users: int) -> None:
    """Against a simulator that answers every 3rd Graph request with 429 and
    Retry-After: the SDK's RetryHandler must make that invisible."""
    client, credential, adapter = make_client(info, ca_file)
    try:

        async def throttled() -> None:
            t0 = time.monotonic()
            qp = UsersRequestBuilder.UsersRequestBuilderGetQueryParameters(select=["id"], top=999)
            first = await client.users.get(request_configuration=RequestConfiguration(query_parameters=qp))
            items = await iterate_all(first, adapter)
            domains = await client.domains.get()
            org = await client.organization.get()
            c.ok(
                len(items) == n_users and len(domains.value) > 0 and len(org.value) == 1,
                "throttled sim: RetryHandler honours 429 + Retry-After",
                f"{len(items)} users",
            )
            c.ok(time.monotonic() - t0 >= 1.0, "throttled sim: Retry-After was waited for")

        await c.run("throttled", throttled)
    finally:
        await credential.close()
        await adapter._http_client.aclose()  # noqa: SLF001 - we created it


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("binary", help="path to the usersync binary")
    ap.add_argument("--users", type=int, default=120)
    ap.add_argument("--page-size-cap", type=int, default=37)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()

    # Turn SIGTERM into an exception so the finally below stops the simulators.
    def on_term(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)

    checks = Checks()
    sims: list[Sim] = []
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="usersync-msgraph-sdk-") as tmp:

        def start(name: str, extra: list[str]) -> tuple[dict, str]:
            ca_file = os.path.join(tmp, f"{name}-ca.pem")
            sim = Sim(args.binary, [*extra, "--tls", "--tls-cert-out", ca_file])
            sims.append(sim)
            return sim.info(), ca_file

        try:
            info, ca_file = start(
                "main",
                ["--users", str(args.users), "--seed", str(args.seed), "--page-size-cap", str(args.page_size_cap)],
            )
            checks.ok(info["graph_url"].startswith("https://"), "sim: serves HTTPS", info["graph_url"])
            asyncio.run(check_all(checks, info, ca_file, args.users, args.page_size_cap))

            info, ca_file = start(
                "throttled",
                ["--users", "25", "--page-size-cap", "10", "--throttle-every", "3", "--retry-after", "1"],
            )
            asyncio.run(check_throttled(checks, info, ca_file, 25))
        except KeyboardInterrupt as e:
            checks.fail("interrupted", e)
        except Exception as e:  # noqa: BLE001
            checks.fail("setup", f"{type(e).__name__}: {e}")
            traceback.print_exc()
        finally:
            for sim in sims:
                sim.stop()
                if sim.proc.returncode not in (0, -signal.SIGINT):
                    print(
                        f"simulator exited with {sim.proc.returncode}; stderr:\n" + "\n".join(sim.stderr_lines[-20:]),
                        file=sys.stderr,
                    )
    print(f"({time.monotonic() - t0:.1f}s)", file=sys.stderr)
    print(f"{checks.passed} passed, {checks.failed} failed", flush=True)
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main())
