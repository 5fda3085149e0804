"""Real S3-compatible servers on loopback, a fault-injecting proxy, and store factories.

Servers (session-scoped, started on first use; helpers in tests/s3servers.py): ``rclone
serve s3`` over a temp directory (it checks signatures and Content-MD5) and moto's server
(accepts any credentials, does not check Content-MD5). Credentials reach the stores only
through the environment, and ``AWS_ENDPOINT_URL`` points at a closed loopback port, so
nothing can reach real AWS.
"""

from __future__ import annotations

import io
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from booktape.stores import MemoryStore, S3Config, Store, clear_shared, open_store
from tests.s3servers import (  # noqa: F401 - re-exported
    BUCKET,
    CLOSED_ENDPOINT,
    SECRET_KEY,
    S3Server,
    free_port,
    rclone_argv,
    sandbox_env,
    start_server,
    stop_server,
)


@pytest.fixture(scope="session", autouse=True)
def _aws_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Test credentials in the environment; no profile, no IMDS, no default endpoint."""
    empty = tmp_path_factory.mktemp("aws") / "absent"
    with pytest.MonkeyPatch.context() as mp:
        sandbox_env(mp, empty)
        yield


@pytest.fixture(scope="session")
def rclone_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """``rclone serve s3`` over a temp directory; the bucket is a subdirectory."""
    base = tmp_path_factory.mktemp("rclone")
    server = start_server("rclone", rclone_argv(base), base / "rclone.log")
    yield server
    stop_server(server.process)


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """moto's standalone server in a subprocess, with the test bucket created."""
    base = tmp_path_factory.mktemp("moto")

    def argv(port: int) -> list[str]:
        return [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]

    server = start_server("moto", argv, base / "moto.log")
    server.admin().create_bucket(Bucket=BUCKET)
    yield server
    stop_server(server.process)


class StoreMaker:
    """Opens stores of one backend, each test under its own key space; closes them after."""

    def __init__(self, backend: str, root: Path, server: S3Server | None) -> None:
        self.backend = backend
        self.root = root
        self.server = server
        self.prefix = f"t-{uuid.uuid4().hex[:12]}"
        self.opened: list[Store] = []

    @property
    def is_s3(self) -> bool:
        return self.server is not None

    def __call__(self, config: S3Config | None = None, *, endpoint: str | None = None) -> Store:
        if self.server is not None:
            store = open_store(
                f"s3://{self.server.bucket}/{self.prefix}",
                s3_endpoint_url=endpoint or self.server.endpoint,
                s3_config=config,
            )
        elif self.backend == "local":
            store = open_store(str(self.root))
        else:
            store = open_store(f"memory://{self.prefix}")
        self.opened.append(store)
        return store

    async def close(self) -> None:
        for store in self.opened:
            await store.close()
        clear_shared()


BACKENDS = [
    "local",
    "memory",
    pytest.param("rclone", marks=pytest.mark.s3),
    pytest.param("moto", marks=pytest.mark.s3),
]
S3_BACKENDS = [
    pytest.param("rclone", marks=pytest.mark.s3),
    pytest.param("moto", marks=pytest.mark.s3),
]


async def _maker(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreMaker]:
    backend: str = request.param
    server = request.getfixturevalue(f"{backend}_server") if backend in ("rclone", "moto") else None
    maker = StoreMaker(backend, tmp_path / "store", server)
    yield maker
    await maker.close()


@pytest.fixture(params=BACKENDS)
async def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreMaker]:
    """A StoreMaker for each backend: local, memory, rclone-s3, moto-s3."""
    async for maker in _maker(request, tmp_path):
        yield maker


@pytest.fixture(params=S3_BACKENDS)
async def make_s3_store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[StoreMaker]:
    """A StoreMaker for each S3 server."""
    async for maker in _maker(request, tmp_path):
        yield maker


@pytest.fixture
async def store(make_store: StoreMaker) -> Store:
    """A store of each backend with default settings."""
    return make_store()


@pytest.fixture
def memory_store() -> MemoryStore:
    """A private MemoryStore."""
    return MemoryStore("test")


# --- a fault-injecting HTTP proxy in front of a server -------------------------------------

_HOP_HEADERS = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "expect", "keep-alive"}
)


@dataclass
class Fault:
    """What the proxy does to the next request that matches ``method`` and ``query``.

    kind: ``status`` answers ``status``/``code`` itself; ``drop`` closes the connection;
    ``corrupt`` flips a byte of the request body; ``etag`` replaces the response ETag.
    """

    kind: str
    status: int = 503
    code: str = "SlowDown"
    method: str | None = None
    query: str | None = None

    def matches(self, request: web.Request) -> bool:
        return (self.method is None or request.method == self.method) and (
            self.query is None or self.query in request.query_string
        )


class FaultProxy:
    """Forwards every request to ``upstream`` (Host header kept, so signatures hold)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.faults: list[Fault] = []
        self.seen: list[tuple[str, str]] = []
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        self._session = aiohttp.ClientSession(auto_decompress=False)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def _take(self, request: web.Request) -> Fault | None:
        for pos, fault in enumerate(self.faults):
            if fault.matches(request):
                return self.faults.pop(pos)
        return None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.seen.append((request.method, request.path_qs))
        fault = self._take(request)
        if fault is not None and fault.kind == "status":
            xml = f"<Error><Code>{fault.code}</Code><Message>injected</Message></Error>"
            return web.Response(status=fault.status, text=xml, content_type="application/xml")
        if fault is not None and fault.kind == "drop":
            assert request.transport is not None
            request.transport.abort()
            return web.Response(status=500)
        if fault is not None and fault.kind == "corrupt" and body:
            body = bytes([body[0] ^ 0xFF]) + body[1:]
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
        headers["Host"] = request.host
        assert self._session is not None
        async with self._session.request(
            request.method, self.upstream + request.path_qs, headers=headers, data=io.BytesIO(body)
        ) as upstream:
            payload = await upstream.read()
            out = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_HEADERS}
            if fault is not None and fault.kind == "etag":
                out = {k: v for k, v in out.items() if k.lower() != "etag"}
                out["ETag"] = '"00000000000000000000000000000000"'
            return web.Response(status=upstream.status, headers=out, body=payload)


@pytest.fixture
async def fault_proxy(moto_server: S3Server) -> AsyncIterator[FaultProxy]:
    """A FaultProxy in front of the moto server."""
    proxy = FaultProxy(moto_server.endpoint)
    await proxy.start()
    yield proxy
    await proxy.close()
